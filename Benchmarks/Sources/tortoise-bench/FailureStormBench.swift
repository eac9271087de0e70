import ArgumentParser
import Foundation
import NIOConcurrencyHelpers

/// A failure storm through a running broker: a pre-filled queue drained by workers that
/// `NACK` every task with an error text of the search benchmark's shape (a group among
/// 1,000, numbers and a hex id that vary), so that each one is fingerprinted, split into
/// words and indexed by the writer.
struct FailureStormBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failure-storm",
        abstract: "Workers NACK a pre-filled queue through tortoised: failures taken in per second."
    )

    @Option(help: "The port of a running tortoised on 127.0.0.1.") var tortoisePort: Int
    @Option(help: "Tasks put before the workers start.") var prefill = 100_000
    @Option(help: "Workers, each NACKing every task it gets.") var workers = 8
    @Option(help: "Seconds of draining at most.") var seconds = 3.0

    func run() throws {
        let queue = "storm-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        let total = prefill
        let payload = [UInt8](repeating: 120, count: 100)
        _ = try threads(4) { _ in
            try TortoiseProducer(port: tortoisePort, queue: queue)
                .putWindowed(window: 64, deadline: .distantFuture, limit: total / 4, payload: { payload })
        }
        let failed = NIOLockedValueBox(0)
        let start = DispatchTime.now()
        let end = start + .milliseconds(Int(seconds * 1000))
        let finishedAt = NIOLockedValueBox<DispatchTime?>(nil)
        _ = try threads(workers) { w in
            let c = try TortoiseConsumer(port: tortoisePort, queue: queue)
            var i = w
            while DispatchTime.now() < end {
                guard let (h, _) = try c.next(timeout: 1) else { break }
                try c.nack(h, error: ErrorAnalysisBench.shapes[0].1(i))
                i += workers
                if failed.withLockedValue({ $0 += 1; return $0 }) >= total / 4 * 4 { break }
            }
            try c.finish()
            if failed.withLockedValue({ $0 }) >= total / 4 * 4 { finishedAt.withLockedValue { $0 = $0 ?? .now() } }
            return 0
        }
        let stop = finishedAt.withLockedValue { $0 } ?? DispatchTime.now()
        let n = failed.withLockedValue { $0 }
        print(String(format: "%d workers NACKed %d tasks in %.2f s: %.0f failures/s", workers, n,
                     Double(stop.uptimeNanoseconds - start.uptimeNanoseconds) / 1e9,
                     Double(n) / (Double(stop.uptimeNanoseconds - start.uptimeNanoseconds) / 1e9)))
    }
}
