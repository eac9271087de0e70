import ArgumentParser
import Foundation
import NIOConcurrencyHelpers

/// Many workers on one queue: does handing out a task cost more when a queue has
/// thousands of idle workers? One producer keeps 64 puts in flight while every worker
/// acks its task at once (a few threads watch them with poll(2)); each worker
/// count is measured on its own queue of a running broker, beside 8 workers in the
/// same run. Then the other way round: one worker on thousands of queues, taking the
/// tasks of one of them.
struct FanOutBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "Tasks per second through one queue with many workers, against 8 workers; then one worker on many queues, against one queue."
    )

    @Option(help: "The broker's port.") var port = 7654
    @Option(help: "Tasks per measurement.") var tasks = 20_000
    @Option(parsing: .upToNextOption, help: "Worker counts to measure (the first is the baseline).")
    var workers: [Int] = [8, 1000, 3000]
    @Option(help: "Threads watching the workers' sockets.") var pollers = 4
    @Option(parsing: .upToNextOption, help: "Then one worker on this many queues (the first is the baseline), taking the tasks of one of them.")
    var wide: [Int] = [1, 100, 1000]

    func run() throws {
        let payload = [UInt8](repeating: 46, count: 100)
        var baseline: Double?
        for (round, count) in workers.enumerated() {
            let queue = "fanout-\(ProcessInfo.processInfo.processIdentifier)-\(round)"
            let rate = try measure(queue: queue, workers: count, payload: payload)
            let ratio = baseline.map { String(format: "%.2f× %d workers", rate / $0, workers[0]) } ?? "baseline"
            print(String(format: "%5d workers on one queue: %6.0f tasks/s (%@)", count, rate, ratio))
            if baseline == nil { baseline = rate }
        }
        baseline = nil
        for (round, count) in wide.enumerated() {
            let rate = try measureWide(prefix: "wide-\(ProcessInfo.processInfo.processIdentifier)-\(round)", queues: count, payload: payload)
            let ratio = baseline.map { String(format: "%.2f× %d", rate / $0, wide[0]) } ?? "baseline"
            print(String(format: "one worker on %5d queues: %6.0f tasks/s (%@)", count, rate, ratio))
            if baseline == nil { baseline = rate }
        }
    }

    /// One worker subscribed to `queues` queues takes the tasks of the last one, acking
    /// each: what a worker's other queues cost each of its ACKs.
    func measureWide(prefix: String, queues: Int, payload: [UInt8]) throws -> Double {
        let n = tasks / 4
        let work = "\(prefix)-work"
        _ = try TortoiseProducer(port: port, queue: work).putWindowed(window: 64, deadline: .distantFuture, limit: n, payload: { payload })
        let w = try BlockingSocket(port: port)
        var subs: [UInt8] = []
        for i in 0..<(queues - 1) { subs += Array("SUB \(prefix)-\(i)\r\n".utf8) }
        try w.write(subs)
        for _ in 0..<(queues - 1) {
            guard try w.readLine() == "OK" else { throw BlockingSocket.Failure(description: "SUB refused") }
        }
        let t0 = DispatchTime.now()
        try w.write("SUB \(work)\r\n")
        var acked = 0
        while acked < n {
            if try Self.ackNextTask(w) { acked += 1 }
        }
        return Double(n) / elapsedSeconds(since: t0)
    }

    func measure(queue: String, workers count: Int, payload: [UInt8]) throws -> Double {
        var sockets: [BlockingSocket] = []
        for _ in 0..<count {
            let s = try BlockingSocket(port: port)
            try s.write("SUB \(queue)\r\n")
            sockets.append(s)
        }
        for s in sockets {
            guard try s.readLine() == "OK" else { throw BlockingSocket.Failure(description: "SUB refused") }
        }
        let n = tasks
        let port = port
        let t0 = DispatchTime.now()
        let producer = Thread {
            _ = try? TortoiseProducer(port: port, queue: queue)
                .putWindowed(window: 64, deadline: .distantFuture, limit: n, payload: { payload })
        }
        producer.stackSize = 1 << 20
        producer.start()
        // Several threads share the watching, so that poll(2) over thousands of sockets
        // is not what limits the rate.
        let acked = NIOLockedValueBox(0)
        let shares = (0..<pollers).map { p in stride(from: p, to: count, by: pollers).map { sockets[$0] } }
        _ = try threads(pollers) { p in
            let mine = shares[p]
            var fds = mine.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            var idle = DispatchTime.now()
            while acked.withLockedValue({ $0 }) < n {
                let ready = poll(&fds, nfds_t(fds.count), 100)
                if ready < 0 && errno == EINTR { continue }
                guard ready > 0 else {
                    if elapsedSeconds(since: idle) > 10 { throw BlockingSocket.Failure(description: "no task for 10 s") }
                    continue
                }
                idle = DispatchTime.now()
                var got = 0
                for k in fds.indices where fds[k].revents != 0 {
                    fds[k].revents = 0
                    let s = mine[k]
                    repeat {
                        if try Self.ackNextTask(s) { got += 1 }
                    } while s.hasBufferedBytes
                }
                acked.withLockedValue { $0 += got }
            }
        }
        return Double(n) / elapsedSeconds(since: t0)
    }

    /// Reads the next frame of a worker's connection; a task (MSG) is acked at once and
    /// says true, an `OK` (to a SUB or an ACK) says false.
    static func ackNextTask(_ s: BlockingSocket) throws -> Bool {
        let line = try s.readLine()
        guard line.hasPrefix("MSG ") else { return false }
        let w = line.split(separator: " ")
        guard w.count == 5, let size = Int(w[4]) else { throw BlockingSocket.Failure(description: "unexpected \(line)") }
        _ = try s.read(size + 2)
        try s.write("ACK \(w[1])\r\n")
        return true
    }
}
