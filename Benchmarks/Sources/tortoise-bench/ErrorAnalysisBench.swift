import ArgumentParser
import Foundation
import TortoiseStorage

/// What the writer spends on each `NACK`'s error text before it touches LMDB: its group
/// (the fingerprint's hash) and its words for the index. Both run on the store's one
/// writer thread, so they bound how fast failures can be taken in.
struct ErrorAnalysisBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "error-analysis",
        abstract: "Nanoseconds per error text for its group and its words (work the writer does for every NACK)."
    )

    @Option(help: "Error texts per measurement.") var count = 200_000
    @Option(help: "Measurements (the median is shown).") var repetitions = 5

    /// Error texts of the shapes tortoise-bench search and real services produce.
    static let shapes: [(String, @Sendable (Int) -> String)] = [
        ("search bench", { i in
            "familyd failure kind\(i % 1000) in module\(i % 37): timeout after \(i % 997) ms for order \(String(UInt64(i) &* 0x9E37_79B9_7F4A_7C15, radix: 16))"
        }),
        ("exception with a UUID", { i in
            "java.lang.IllegalStateException: payment \(UUID().uuidString.lowercased()) declined by provider (code \(i % 50)) at PaymentService.charge(PaymentService.java:\(100 + i % 400))"
        }),
        ("short", { i in "connection refused: 10.0.\(i % 256).\(i % 7):5432" }),
        ("non-ASCII", { i in "Connexion REFUSÉE : hôte_\(i % 90) injoignable après \(i % 30) s — réessayer" }),
    ]

    func run() throws {
        print("shape                        group ns/text   words ns/text   bytes")
        for (name, make) in Self.shapes {
            let texts = (0..<count).map(make)
            func median(_ body: (String) -> Int) -> Double {
                var times: [Double] = []
                var sink = 0
                for _ in 0..<repetitions {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    for t in texts { sink &+= body(t) }
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / Double(texts.count))
                }
                if sink == 42 { print("") }
                return times.sorted()[times.count / 2]
            }
            let group = median { Int(truncatingIfNeeded: ErrorFingerprint.group(of: $0)) }
            let words = median { ErrorWords.words($0).count }
            let bytes = texts.map(\.utf8.count).reduce(0, +) / texts.count
            print(pad(name, 22) + pad(String(format: "%.0f", group), 18) + pad(String(format: "%.0f", words), 16) + pad("\(bytes)", 8))
        }
    }
}
