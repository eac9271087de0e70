import ArgumentParser
import Foundation
import NIOConcurrencyHelpers

/// The side-by-side matrix: the same workloads against TortoiseMQ, beanstalkd and
/// RabbitMQ already running on 127.0.0.1 (Benchmarks/compare.sh starts them).
struct CompareBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Run the workload matrix against running brokers and print one table with ratios."
    )

    @Option(help: "TortoiseMQ's port (0: skip).") var tortoisePort = 0
    @Option(help: "beanstalkd's port (0: skip).") var beanstalkPort = 0
    @Option(help: "RabbitMQ's AMQP port (0: skip).") var rabbitPort = 0
    @Option(help: "Seconds per throughput measurement.") var seconds = 3.0
    @Option(help: "Runs of the whole matrix; each cell shows the median.") var runs = 3
    @Option(help: "Seconds of the paced latency run.") var pacedSeconds = 6.0
    @Option(help: "Tasks put before each consume run (at most --seconds of draining is measured).") var prefill = 100_000
    @Option(help: "Run only these workloads (produce, window, consume, together, paced); the rest show nan.")
    var only: [String] = []

    func wanted(_ workload: String) -> Bool { only.isEmpty || only.contains(workload) }

    struct Row {
        var name: String
        var unit: String
        var higherIsBetter: Bool
    }

    static let rows: [Row] = [
        Row(name: "produce, 1 producer waiting for each OK", unit: "tasks/s", higherIsBetter: true),
        Row(name: "produce, 8 producers waiting for each OK", unit: "tasks/s", higherIsBetter: true),
        Row(name: "produce, 4 producers with 64 in flight", unit: "tasks/s", higherIsBetter: true),
        Row(name: "consume, 1 worker (prefetch 1, ack each)", unit: "tasks/s", higherIsBetter: true),
        Row(name: "consume, 8 workers", unit: "tasks/s", higherIsBetter: true),
        Row(name: "together, 2 producers + 4 workers, flat out", unit: "acked/s", higherIsBetter: true),
        Row(name: "paced 500/s: p50 put→ack", unit: "ms", higherIsBetter: false),
        Row(name: "paced 500/s: p99 put→ack", unit: "ms", higherIsBetter: false),
        Row(name: "paced 500/s: p99.9 put→ack", unit: "ms", higherIsBetter: false),
    ]

    func run() throws {
        let peers: [(Peer, Int)] = [(.tortoise, tortoisePort), (.beanstalkd, beanstalkPort), (.rabbitmq, rabbitPort)].filter { $0.1 > 0 }
        var results: [Peer: [[Double]]] = [:]
        for run in 0..<runs {
            for (peer, port) in peers {
                FileHandle.standardError.write(Data("run \(run + 1)/\(runs): \(peer.rawValue)\n".utf8))
                let figures = try matrix(peer, port: port, tag: "r\(run)")
                results[peer, default: Array(repeating: [], count: Self.rows.count)] = zip(results[peer] ?? Array(repeating: [], count: Self.rows.count), figures).map { $0 + [$1] }
            }
        }
        let median: (Peer) -> [Double] = { p in results[p]!.map { v in v.sorted()[v.count / 2] } }
        var header = ["workload (median of \(runs))"] + peers.map(\.0.rawValue)
        let others = peers.dropFirst().map(\.0)
        if peers.first?.0 == .tortoise { header += others.map { "vs \($0.rawValue)" } }
        var table: [[String]] = []
        for (i, row) in Self.rows.enumerated() {
            var cells = [row.name]
            for (p, _) in peers { cells.append(format(median(p)[i], row.unit)) }
            if peers.first?.0 == .tortoise {
                let ours = median(.tortoise)[i]
                for o in others {
                    let theirs = median(o)[i]
                    let ratio = row.higherIsBetter ? ours / max(theirs, 1e-9) : theirs / max(ours, 1e-9)
                    cells.append(String(format: "%.2f×", ratio))
                }
            }
            table.append(cells)
        }
        print(render(header, table))
        print("\nRatios: TortoiseMQ's figure over the peer's (for latency, the peer's over ours): above 1× TortoiseMQ is better.")
    }

    func format(_ v: Double, _ unit: String) -> String {
        v.isNaN ? "-" : unit == "ms" ? String(format: "%.2f ms", v) : "\(Int(v.rounded())) \(unit)"
    }

    func render(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0) : String(repeating: " ", count: widths[i] - c.count) + c }.joined(separator: " | ")
        }
        return ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "-|-")] + rows.map(line)).joined(separator: "\n")
    }

    // MARK: Workloads

    static let payloadSize = 100

    static func payload() -> [UInt8] {
        var p = [UInt8](repeating: 46, count: payloadSize)
        var t = DispatchTime.now().uptimeNanoseconds
        for i in 0..<8 { p[i] = UInt8(t & 0xFF); t >>= 8 }
        return p
    }

    static func sentAt(_ p: [UInt8]) -> UInt64 {
        var t: UInt64 = 0
        for i in (0..<8).reversed() { t = t << 8 | UInt64(p[i]) }
        return t
    }

    func matrix(_ peer: Peer, port: Int, tag: String) throws -> [Double] {
        let secs = seconds
        func deadline(_ s: Double) -> DispatchTime { .now() + .milliseconds(Int(s * 1000)) }
        var out: [Double] = []

        // Produce, each producer waiting for every confirmation.
        for n in [1, 8] where !wanted("produce") { _ = n; out.append(.nan) }
        for n in [1, 8] where wanted("produce") {
            let q = "p\(n)\(tag)"
            let start = DispatchTime.now()
            let end = deadline(secs)
            let counts = try threads(n) { _ in
                let p = try makeProducer(peer, port: port, queue: q)
                var c = 0
                while DispatchTime.now() < end { try p.put(Self.payload()); c += 1 }
                return c
            }
            out.append(Double(counts.reduce(0, +)) / elapsedSeconds(since: start))
        }

        // Produce with 64 in flight per producer.
        if !wanted("window") { out.append(.nan) } else {
            let q = "pw\(tag)"
            let start = DispatchTime.now()
            let end = deadline(secs)
            let counts = try threads(4) { _ in
                try makeProducer(peer, port: port, queue: q).putWindowed(window: 64, deadline: end, limit: .max, payload: Self.payload)
            }
            out.append(Double(counts.reduce(0, +)) / elapsedSeconds(since: start))
        }

        // Consume a pre-filled queue.
        for n in [1, 8] where !wanted("consume") { _ = n; out.append(.nan) }
        for n in [1, 8] where wanted("consume") {
            let q = "c\(n)\(tag)"
            let total = prefill
            _ = try threads(4) { i in
                try makeProducer(peer, port: port, queue: q).putWindowed(window: 64, deadline: .distantFuture, limit: total / 4, payload: Self.payload)
            }
            let consumed = NIOLockedValueBox(0)
            let start = DispatchTime.now()
            let end = deadline(secs)
            let finishedAt = NIOLockedValueBox<DispatchTime?>(nil)
            _ = try threads(n) { _ in
                let c = try makeConsumer(peer, port: port, queue: q)
                while DispatchTime.now() < end {
                    guard let (h, _) = try c.next(timeout: 1) else { break }
                    try c.ack(h)
                    let all = consumed.withLockedValue { $0 += 1; return $0 }
                    if all >= total { break }
                }
                try c.finish()
                let done = consumed.withLockedValue { $0 } >= total
                if done { finishedAt.withLockedValue { $0 = $0 ?? .now() } }
                return 0
            }
            let stop = finishedAt.withLockedValue { $0 } ?? DispatchTime.now()
            out.append(Double(consumed.withLockedValue { $0 }) / (Double(stop.uptimeNanoseconds - start.uptimeNanoseconds) / 1e9))
        }

        // Producers and workers together, flat out.
        if !wanted("together") { out.append(.nan) } else {
            let q = "t\(tag)"
            let end = deadline(secs)
            let acked = NIOLockedValueBox(0)
            let start = DispatchTime.now()
            _ = try threads(6) { i in
                if i < 2 {
                    let p = try makeProducer(peer, port: port, queue: q)
                    while DispatchTime.now() < end { try p.put(Self.payload()) }
                } else {
                    let c = try makeConsumer(peer, port: port, queue: q)
                    while DispatchTime.now() < end {
                        guard let (h, _) = try c.next(timeout: 1) else { continue }
                        try c.ack(h)
                        acked.withLockedValue { $0 += 1 }
                    }
                    try c.finish()
                }
                return 0
            }
            out.append(Double(acked.withLockedValue { $0 }) / elapsedSeconds(since: start))
        }

        // Paced at 500 tasks/s: latency from put to ack.
        if !wanted("paced") { out += [.nan, .nan, .nan] } else {
            let q = "l\(tag)"
            let end = deadline(pacedSeconds)
            let latencies = NIOLockedValueBox<[Double]>([])
            _ = try threads(6) { i in
                if i < 2 {
                    let p = try makeProducer(peer, port: port, queue: q)
                    let interval: UInt64 = 4_000_000 // 250/s per producer
                    var next = DispatchTime.now().uptimeNanoseconds + UInt64(i) * interval / 2
                    while DispatchTime.now() < end {
                        let now = DispatchTime.now().uptimeNanoseconds
                        if now < next { usleep(UInt32((next - now) / 1000)) }
                        try p.put(Self.payload())
                        next += interval
                    }
                } else {
                    let c = try makeConsumer(peer, port: port, queue: q)
                    let stop = end + .milliseconds(500)
                    while DispatchTime.now() < stop {
                        guard let (h, body) = try c.next(timeout: 1) else { continue }
                        try c.ack(h)
                        let ms = Double(DispatchTime.now().uptimeNanoseconds - Self.sentAt(body)) / 1e6
                        latencies.withLockedValue { $0.append(ms) }
                    }
                    try c.finish()
                }
                return 0
            }
            let sorted = latencies.withLockedValue { $0 }.sorted()
            for p in [0.5, 0.99, 0.999] {
                out.append(sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))])
            }
        }
        return out
    }
}
