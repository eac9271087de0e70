import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import TortoiseStorage

/// Scale figures of a real tortoised: memory with 1,000,000 ready tasks and after they
/// drain, start-up time with 1,000,000 ready and 10,000 in-flight tasks on disk, and
/// 1,000 queues with 2,000 worker connections at once.
struct ScaleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Memory, restart time and connection figures of tortoised at scale."
    )

    @Option(help: "The tortoised binary.") var tortoised = ".build/release/tortoised"
    @Option(help: "Where to put the data.") var directory = FileManager.default.temporaryDirectory.path
    @Option(help: "Ready tasks.") var ready = 1_000_000
    @Option(help: "In-flight tasks.") var inflight = 10_000
    @Option(help: "Queues for the connection test.") var queues = 1000
    @Option(help: "Worker connections for the connection test.") var workers = 2000

    struct Broker {
        let process: Process
        let port: Int
        let startSeconds: Double
    }

    func start(_ dir: String) throws -> Broker {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tortoised)
        p.arguments = ["--data", dir, "--port", "0"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        let t0 = DispatchTime.now()
        try p.run()
        var line = [UInt8]()
        while true {
            let b = out.fileHandleForReading.readData(ofLength: 1)
            if b.isEmpty || b.first == 10 { break }
            line += b
        }
        let secs = elapsedSeconds(since: t0)
        guard let port = Int(String(decoding: line, as: UTF8.self).split(separator: ":").last ?? "") else {
            throw BlockingSocket.Failure(description: "tortoised did not start: \(String(decoding: line, as: UTF8.self))")
        }
        return Broker(process: p, port: port, startSeconds: secs)
    }

    func stop(_ b: Broker) {
        kill(b.process.processIdentifier, SIGTERM)
        b.process.waitUntilExit()
    }

    /// The anonymous, total and peak (VmHWM) resident memory of `pid`, in KiB.
    static func memory(_ pid: Int32) -> (anon: Int, total: Int, peak: Int) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func kb(_ key: String) -> Int {
            status.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? 0
        }
        return (kb("RssAnon:"), kb("VmRSS:"), kb("VmHWM:"))
    }

    func run() async throws {
        let dir = directory + "/tortoise-scale-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await seed(dir)
        try measure(dir)
    }

    func measure(_ dir: String) throws {

        let b = try start(dir)
        Thread.sleep(forTimeInterval: 1)
        let full = Self.memory(b.process.processIdentifier)
        print("start-up with \(ready) ready + \(inflight) in-flight tasks on disk: listening after \(String(format: "%.2f", b.startSeconds)) s")
        print("memory with \(ready + inflight) waiting tasks: anonymous RSS \(mib(full.anon)) (total RSS \(mib(full.total)), the rest is LMDB's file-backed map)")

        // Drain with 8 workers.
        let t0 = DispatchTime.now()
        let total = ready + inflight
        let done = DispatchGroup()
        let counter = NIOLockedValueBox(0)
        for i in 0..<8 {
            done.enter()
            Thread {
                defer { done.leave() }
                guard let c = try? TortoiseConsumer(port: b.port, queue: "q\(i % 4)") else { return }
                while let (h, _) = try? c.next(timeout: 2) {
                    try? c.ack(h)
                    counter.withLockedValue { $0 += 1 }
                }
                try? c.finish()
            }.start()
        }
        done.wait()
        let consumed = counter.withLockedValue { $0 }
        let drainSecs = elapsedSeconds(since: t0)
        let drained = Self.memory(b.process.processIdentifier)
        print("drained \(consumed) of \(total) tasks with 8 workers in \(String(format: "%.1f", drainSecs)) s (\(Int(Double(consumed) / drainSecs)) tasks/s)")
        print("memory after the drain: anonymous RSS \(mib(drained.anon)) (total RSS \(mib(drained.total)))")

        // Many queues and connections at once.
        let many = try ManyConnections.measure(workers: workers, queues: queues, pid: b.process.processIdentifier, connect: { i in
            let s = try TortoiseConsumer(port: b.port, queue: "many\(i % queues)")
            try s.finish() // the SUB's OK
            return (s.socket.fd, {
                guard let (h, _) = try s.next(timeout: 1) else { return false }
                try s.ack(h)
                return true
            })
        }, put: { q in
            try TortoiseProducer(port: b.port, queue: "many\(q)").put(Array("task \(q)".utf8))
        })
        print(many.summary(workers: workers, queues: queues, broker: ""))
        stop(b)
    }

    /// Puts `ready + inflight` tasks over four queues and takes `inflight` of them, through
    /// the store itself (much faster than over the network), then closes it.
    func seed(_ dir: String) async throws {
        var config = TaskStore.Configuration(directory: dir)
        config.maxMapSize = 64 << 30
        let store = try TaskStore(config)
        defer { store.close() }
        let payload = [UInt8](repeating: 46, count: 100)
        let total = ready + inflight
        let callers = 256
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<callers {
                group.addTask {
                    for i in stride(from: c, to: total, by: callers) {
                        _ = try await store.perform(.put(queue: "q\(i % 4)", payload: payload))
                    }
                }
            }
            try await group.waitForAll()
        }
        // Take `inflight` from the fronts: they stay in flight (never acked).
        for i in 0..<inflight { _ = try await store.perform(.take(queue: "q\(i % 4)")) }
        print("seeded \(ready) ready and \(inflight) in-flight tasks")
    }
}
