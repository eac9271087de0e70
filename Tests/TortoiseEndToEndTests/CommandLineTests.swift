import Foundation
import Testing
import TortoiseProtocol
import TortoiseStorage

/// The command line of tortoised: flags, environment, the listening line, signals, and
/// a second instance on the same data directory.
@Suite(.serialized) struct CommandLineTests {
    func run(_ args: [String], timeout: Double = 20) throws -> (status: Int32, stdout: String, stderr: String) {
        let t = try Tool.run("tortoised", args, timeout: timeout)
        return (t.status, t.stdout, t.stderr)
    }

    @Test func aSecondBrokerOnTheSameDataDirectoryRefusesToStart() throws {
        let broker = try BrokerProcess()
        let id = try broker.client().put("q", "keep me")
        let second = try run(["--data", broker.directory, "--port", "0"])
        #expect(second.status != 0)
        #expect(second.stderr.contains("in use by another process"))
        #expect(second.stderr.contains(broker.directory))
        #expect(!second.stdout.contains("listening"))
        // The first is unharmed.
        let w = try broker.client()
        #expect(try w.call("SUB q") == .ok([]))
        #expect(try w.message().id == id)
    }

    @Test func sigintStopsCleanlyWithStatusZero() throws {
        let broker = try BrokerProcess()
        _ = try broker.client().put("q", "x")
        broker.process.signal(SIGINT)
        broker.process.wait()
        #expect(broker.process.exitedNormally)
        #expect(broker.process.terminationStatus == 0)
        #expect(broker.stderr.contains("stopped cleanly"))
    }

    @Test func badFlagsAreRefusedWithAMessage() throws {
        let r = try run(["--failed-retention", "forever", "--port", "0", "--data", BrokerProcess.freshDirectory()])
        #expect(r.status != 0)
        #expect(r.stderr.contains("--failed-retention"))
        let p = try run(["--port", "70000"])
        #expect(p.status != 0)
        #expect(p.stderr.contains("--port"))
        let help = try run(["--help"])
        #expect(help.status == 0)
        for flag in ["--data", "--host", "--port", "--token", "--max-body", "--max-deliveries", "--ack-timeout", "--failed-retention"] {
            #expect(help.stdout.contains(flag), "\(flag) in --help")
        }
    }

    @Test func aStartCompactsAStoreThatDrainedABacklog() async throws {
        // A data directory whose backlog came and went, with three tasks still waiting.
        let dir = BrokerProcess.freshDirectory()
        var c = TaskStore.Configuration(directory: dir)
        c.compactFilesFrom = nil
        let store = try TaskStore(c)
        var kept: [TaskID] = []
        for i in 0..<3 {
            guard case .put(let id) = try await store.perform(.put(queue: "keep", payload: Array("kept \(i)".utf8))) else { return }
            kept.append(id)
        }
        let payload = [UInt8](repeating: 7, count: 2000)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    for _ in 0..<100 { _ = try await store.perform(.put(queue: "backlog", payload: payload)) }
                    while case .taken(let t?) = try await store.perform(.take(queue: "backlog")) {
                        _ = try await store.perform(.ack(t.id))
                    }
                }
            }
            try await group.waitForAll()
        }
        store.close()
        let size = { (try? FileManager.default.attributesOfItem(atPath: dir + "/data.mdb")[.size] as? Int) ?? 0 }
        let before = size()

        // --compact-from 0: left as it is.
        let off = try BrokerProcess(directory: dir, arguments: ["--compact-from", "0"])
        #expect(off.terminate() == 0)
        #expect(!off.stderr.contains("compacted"))
        #expect(size() >= before)

        let broker = try BrokerProcess(directory: dir, arguments: ["--compact-from", "1"])
        #expect(broker.stderr.contains("compacted the store's file from"), "\(broker.stderr)")
        #expect(size() * 2 < before, "\(before) -> \(size()) bytes")
        let w = try broker.client()
        #expect(try w.call("SUB keep") == .ok([]))
        for id in kept {
            let m = try w.message()
            #expect(m.id == id)
            #expect(try w.call("ACK \(m.id)") == .ok([]))
        }
        #expect(try w.stats().queues["backlog"]?.ready ?? 0 == 0)
        let negative = try run(["--compact-from", "-1", "--port", "0", "--data", BrokerProcess.freshDirectory()])
        #expect(negative.status != 0 && negative.stderr.contains("--compact-from"))
    }

    @Test func aBusyPortIsAClearError() throws {
        let broker = try BrokerProcess()
        let r = try run(["--data", BrokerProcess.freshDirectory(), "--port", String(broker.port)])
        #expect(r.status != 0)
        #expect(r.stderr.contains("cannot listen on 127.0.0.1:\(broker.port)"))
    }

    @Test func retentionPrunesOldFailuresAndCountsThem() throws {
        let broker = try BrokerProcess(arguments: ["--failed-retention", "1s"])
        let p = try broker.client()
        let w = try broker.client()
        let id = try p.put("q", "x")
        #expect(try w.call("SUB q") == .ok([]))
        _ = try w.message()
        #expect(try w.call("NACK \(id) 3\r\nold") == .ok([]))
        #expect(try p.failed().total == 1)
        var pruned = 0
        for _ in 0..<40 where pruned == 0 {
            Thread.sleep(forTimeInterval: 0.25)
            pruned = try p.stats().pruned
        }
        #expect(pruned == 1)
        #expect(try p.failed().total == 0)
    }
}

/// Clients that misbehave must not hurt the broker or the others.
@Suite(.serialized) struct HostileClientTests {
    @Test func aClientThatNeverReadsDoesNotStallOthers() throws {
        let broker = try BrokerProcess()
        let hog = try broker.client()
        let flood = Array(String(repeating: "PING\r\n", count: 20_000).utf8)
        // Pipelined commands whose replies are never read, until the broker stops taking them.
        var sent = 0
        for _ in 0..<50 {
            let n = hog.sendWithoutWaiting(flood)
            sent += n
            if n < flood.count { Thread.sleep(forTimeInterval: 0.05) }
        }
        let other = try broker.client()
        for _ in 0..<20 { #expect(try other.call("PING") == .ok(["PONG"])) }
        #expect(try other.put("q", "still fine") == 1)
        #expect(sent < 50 * flood.count, "the broker kept reading from a client that does not read")
        // Its memory stays bounded: anonymous RSS well under 200 MiB.
        let status = try String(contentsOfFile: "/proc/\(broker.process.pid)/status", encoding: .utf8)
        let anon = status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") }
        let kb = anon.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? 0
        // (Under a sanitizer, shadow memory makes RSS meaningless: TORTOISE_SANITIZER skips it.)
        if ProcessInfo.processInfo.environment["TORTOISE_SANITIZER"] == nil {
            #expect(kb > 0 && kb < 200 * 1024, "RssAnon \(kb) kB")
        }
    }

    @Test func idleConnectionsAndOneByteASecondSendersDoNotBlockWork() throws {
        let broker = try BrokerProcess()
        let idle = try (0..<1000).map { _ in try broker.client() }
        let slow = try (0..<20).map { _ in try broker.client() }
        for c in slow { c.send("PUT q") } // half a command each, and then nothing for a while
        let p = try broker.client()
        let w = try broker.client()
        #expect(try w.call("SUB work") == .ok([]))
        for round in 0..<3 {
            for c in slow { c.send(" ") }
            let id = try p.put("work", "job \(round)")
            let m = try w.message(timeout: 5)
            #expect(m.id == id)
            #expect(try w.call("ACK \(m.id)") == .ok([]))
        }
        #expect(try p.stats().connections == 1000 + 20 + 2)
        // The slow senders finish their commands, byte by byte, and are answered.
        for c in slow { c.send("1\r\n") }
        for c in slow { c.send("x\r\n") }
        for c in slow { #expect(try c.frame().isOK) }
        _ = idle
    }

    @Test func garbageBytesNeverCrashTheBroker() throws {
        let broker = try BrokerProcess()
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<30 {
            let c = try broker.client()
            let n = Int.random(in: 1...4000, using: &rng)
            c.send((0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) })
            c.send("\r\nPUT q 3\r\n")
        }
        for verb in ["PUT", "NACK", "FAILED", "REPLAY", "ERRORS"] {
            let c = try broker.client()
            c.send("\(verb) 1 2 3 4 5 99999999999999999999999\r\n\u{0}\u{1}\r\n")
        }
        Thread.sleep(forTimeInterval: 0.3)
        let fresh = try broker.client()
        #expect(try fresh.call("PING") == .ok(["PONG"]))
        #expect(try fresh.stats().queues["q"] == nil || true)
        #expect(broker.process.isRunning)
    }
}
