import ArgumentParser
import Foundation
import NIOConcurrencyHelpers

/// Hostile clients against a running tortoised: the PING latency of a well-behaved
/// client and the broker's memory, at rest and while thousands of idle connections,
/// one-byte-a-second senders, clients that never read, pipelined floods and a client
/// asking STATS of thousands of queues in a loop hit it, and a client asking `FAILED` of
/// hundreds of failures with large payloads (the broker's peak memory is the figure).
struct HostileBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hostile",
        abstract: "A normal client's latency and the broker's memory under hostile clients."
    )

    @Option(help: "The broker's port.") var port = 7654
    @Option(help: "The broker's process id (for its memory).") var pid: Int32
    @Option(help: "Idle connections.") var idle = 5000
    @Option(help: "Slow senders (one byte a second).") var slow = 50
    @Option(help: "Clients that flood pipelined commands and never read.") var floods = 4
    @Option(help: "Queues (one task each) that a client then asks STATS about in a loop.") var queues = 10_000
    @Option(help: "Failures with large payloads that a client then asks FAILED about in a loop (0: skip).") var largeFailures = 200
    @Option(help: "The payload size of those failures, in bytes (at most the broker's --max-body).") var largeFailureBytes = 1 << 20
    @Option(help: "Seconds per phase.") var seconds = 5.0

    func latency(_ label: String) throws {
        let s = try BlockingSocket(port: port)
        var samples: [Double] = []
        let end = DispatchTime.now() + .milliseconds(Int(seconds * 1000))
        while DispatchTime.now() < end {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try s.write("PING\r\n")
            guard try s.readLine() == "OK PONG" else { throw BlockingSocket.Failure(description: "bad PING reply") }
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            usleep(2000)
        }
        samples.sort()
        let mem = ScaleBench.memory(pid)
        print(String(format: "%-48@ PING p50 %6.3f ms  p99 %6.3f ms  max %7.3f ms  broker anonymous RSS %6.1f MiB",
                     label as NSString, samples[samples.count / 2], samples[Int(Double(samples.count) * 0.99)], samples.last!, Double(mem.anon) / 1024))
    }

    /// Puts `largeFailures` tasks of `largeFailureBytes` and NACKs them, then asks
    /// `FAILED` of them all in a loop, reading each reply whole.
    func askFailedOfLargePayloads() throws {
        let producer = try BlockingSocket(port: port)
        let body = Array(String(repeating: "x", count: largeFailureBytes).utf8)
        for _ in 0..<largeFailures {
            try producer.write(Array("PUT hostile-big \(body.count)\r\n".utf8) + body + Array("\r\n".utf8))
            _ = try producer.readLine()
        }
        let worker = try BlockingSocket(port: port)
        try worker.write("SUB hostile-big\r\n")
        _ = try worker.readLine()
        var (nacked, confirmed) = (0, 0)
        while confirmed < largeFailures {
            // A NACK's OK waits for the disk; the next MSG may come before it.
            let head = try worker.readLine().split(separator: " ")
            if head.first == "OK" { confirmed += 1; continue }
            guard head.first == "MSG", head.count == 5, let size = Int(head[4]) else {
                throw BlockingSocket.Failure(description: "expected MSG, got \(head.joined(separator: " "))")
            }
            _ = try worker.read(size + 2)
            try worker.write("NACK \(head[1]) 13\r\nout of memory\r\n")
            nacked += 1
        }
        let peakBefore = ScaleBench.memory(pid).peak
        let asker = try BlockingSocket(port: port)
        let asking = NIOLockedValueBox(true)
        let replies = NIOLockedValueBox((count: 0, bytes: 0, seconds: 0.0))
        let thread = Thread {
            while asking.withLockedValue({ $0 }) {
                let start = DispatchTime.now()
                guard (try? asker.write("FAILED 100000 0\r\n\r\n")) != nil, let head = try? asker.readLine(),
                      let size = Int(head.dropFirst(5)), (try? asker.read(size + 2)) != nil else { return }
                let took = elapsedSeconds(since: start)
                replies.withLockedValue { $0.count += 1; $0.bytes = size; $0.seconds += took }
            }
        }
        thread.start()
        try latency("+ a client asking FAILED of \(largeFailures) × \(largeFailureBytes >> 10) KiB in a loop")
        asking.withLockedValue { $0 = false }
        Thread.sleep(forTimeInterval: 1)
        let (count, bytes, took) = replies.withLockedValue { $0 }
        print(String(format: "  %d replies of %.1f MiB, %.2f s each; the broker's peak RSS rose by %.1f MiB",
                     count, Double(bytes) / 1_048_576, took / Double(max(count, 1)), Double(ScaleBench.memory(pid).peak - peakBefore) / 1024))
    }

    func run() throws {
        try latency("baseline")
        var held: [BlockingSocket] = []
        for _ in 0..<idle { held.append(try BlockingSocket(port: port)) }
        try latency("+ \(idle) idle connections")

        let running = NIOLockedValueBox(true)
        let line = Array("PUT slow 5\r\nhello\r\n".utf8)
        for _ in 0..<slow {
            let s = try BlockingSocket(port: port)
            Thread {
                var i = 0
                while true {
                    if !running.withLockedValue({ $0 }) { return }
                    _ = try? s.write([line[i % line.count]])
                    i += 1
                    sleep(1)
                }
            }.start()
        }
        try latency("+ \(slow) senders of one byte a second")

        for (kind, text) in [("PING", "PING\r\n"), ("PUT", "PUT flood 3\r\nabc\r\n")] {
            let flooding = NIOLockedValueBox(true)
            let flood = Array(String(repeating: text, count: 5000).utf8)
            for _ in 0..<floods {
                let s = try BlockingSocket(port: port)
                _ = fcntl(s.fd, F_SETFL, fcntl(s.fd, F_GETFL) | O_NONBLOCK)
                Thread {
                    while flooding.withLockedValue({ $0 }) {
                        _ = flood.withUnsafeBytes { Glibc.send(s.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                        usleep(1000)
                    }
                }.start()
            }
            try latency("+ \(floods) clients flooding \(kind)s, never reading")
            flooding.withLockedValue { $0 = false }
            Thread.sleep(forTimeInterval: 1)
        }

        // A dashboard gone wrong: STATS as fast as it is answered, over many queues.
        let filler = try BlockingSocket(port: port)
        var puts: [UInt8] = []
        for q in 0..<queues { puts += Array("PUT hostile-\(q) 1\r\nx\r\n".utf8) }
        try filler.write(puts)
        for _ in 0..<queues { _ = try filler.readLine() }
        let asking = NIOLockedValueBox(true)
        let statsThread = Thread {
            while asking.withLockedValue({ $0 }) {
                guard (try? filler.write("STATS\r\n")) != nil, let head = try? filler.readLine(),
                      let size = Int(head.dropFirst(5)), (try? filler.read(size + 2)) != nil else { return }
            }
        }
        statsThread.start()
        try latency("+ a client asking STATS of \(queues) queues in a loop")
        asking.withLockedValue { $0 = false }
        Thread.sleep(forTimeInterval: 0.5)

        if largeFailures > 0 { try askFailedOfLargePayloads() }

        running.withLockedValue { $0 = false }
        held.removeAll()
        Thread.sleep(forTimeInterval: 1.5)
        try latency("after they all went away")
    }
}
