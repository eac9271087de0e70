import ArgumentParser
import Foundation
import NIOConcurrencyHelpers

/// `tortoise-bench`: the project's benchmarks. Each prints its figures beside a peer or
/// baseline measured in the same run, since these machines are shared and noisy.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tortoise-bench",
        abstract: "TortoiseMQ benchmarks (figures as ratios to a baseline measured in the same run).",
        subcommands: [StorageBench.self, SearchBench.self, CompareBench.self, ScaleBench.self, PipeliningBench.self, HostileBench.self, RoundTripBench.self, RabbitScaleBench.self, FanOutBench.self, HandOffBench.self, FlushContentionBench.self, ErrorAnalysisBench.self, FailureStormBench.self]
    )
}

/// A size given in KiB (as /proc gives it), in MiB with one decimal.
func mib(_ kib: Int) -> String { String(format: "%.1f MiB", Double(kib) / 1024) }

/// `s` right-aligned in `n` columns, for tables.
func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }

/// Seconds from `start` to now.
func elapsedSeconds(since start: DispatchTime) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
}

/// Runs `body` on `n` threads at once (blocking drivers need real threads); returns
/// their results in order, or the first error.
func threads<R: Sendable>(_ n: Int, _ body: @escaping @Sendable (Int) throws -> R) throws -> [R] {
    let results = NIOLockedValueBox<[Int: Result<R, any Error>]>([:])
    let group = DispatchGroup()
    for i in 0..<n {
        group.enter()
        let t = Thread {
            let r = Result { try body(i) }
            results.withLockedValue { $0[i] = r }
            group.leave()
        }
        t.stackSize = 1 << 20
        t.start()
    }
    group.wait()
    let all = results.withLockedValue { $0 }
    return try (0..<n).map { try all[$0]!.get() }
}
