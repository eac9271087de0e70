import ArgumentParser
import Foundation
import TortoiseClient

/// One client connection: puts pipelined from many concurrent tasks against the same
/// number of puts done one round trip at a time, in one run against a running broker.
struct PipeliningBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipelining",
        abstract: "Pipelined puts on one TortoiseClient connection against one-at-a-time puts."
    )

    @Option(help: "The broker's port.") var port = 7654
    @Option(help: "Puts per measurement.") var puts = 5000
    @Option(help: "Concurrent tasks sharing the connection when pipelined.") var concurrency = 128

    func run() async throws {
        let config = TortoiseClientConfiguration(host: "127.0.0.1", port: port, environment: [:])
        let client = try await TortoiseClient.connect(config)
        let payload = [UInt8](repeating: 46, count: 100)

        var t0 = DispatchTime.now()
        for _ in 0..<puts { _ = try await client.put("pipelining-seq", payload) }
        let sequential = Double(puts) / elapsedSeconds(since: t0)

        t0 = DispatchTime.now()
        let n = puts
        let c = concurrency
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<c {
                group.addTask {
                    for _ in stride(from: w, to: n, by: c) { _ = try await client.put("pipelining-par", payload) }
                }
            }
            try await group.waitForAll()
        }
        let pipelined = Double(puts) / elapsedSeconds(since: t0)
        print("one connection, \(puts) durable puts of 100 bytes:")
        print("  one round trip at a time: \(Int(sequential)) puts/s")
        print("  pipelined from \(concurrency) tasks: \(Int(pipelined)) puts/s (\(String(format: "%.1f", pipelined / sequential))×)")
        await client.close()
    }

}
