import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import TortoiseClient
import TortoiseProtocol

/// Crash torture: producers, workers that ACK, NACK and REQUEUE, and an operator who
/// replays failures run against a real tortoised that is killed with SIGKILL at random
/// moments and restarted on the same data directory and port. At the end it checks,
/// from what the clients were told, that nothing was lost, acked twice, or in two places,
/// that failures kept their errors, and that the search indexes agree with the store.
@main
struct Torture: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tortoise-torture",
        abstract: "Kill tortoised with SIGKILL under load, many times, and check that nothing was lost."
    )

    @Option(help: "The tortoised binary.") var tortoised = "tortoised"
    @Option(help: "How many SIGKILL-and-restart cycles.") var kills = 100
    @Option(help: "Longest time between kills, in milliseconds.") var maxInterval = 1500
    @Option(help: "The data directory (default: a fresh temporary one).") var data: String?
    @Option(help: "Producers.") var producers = 3
    @Option(help: "Workers.") var workers = 4
    @Flag(help: "CI mode: 8 kills, short intervals.") var short = false
    @Option(help: "Passed to tortoised as --compact-from (MiB; 1 compacts at almost every restart).") var compactFrom: Int?
    @Option(help: "Passed to tortoised as --compact-check (seconds; small values compact while it runs too).") var compactCheck: Double?

    func run() async throws {
        let kills = short ? 8 : self.kills
        let maxInterval = short ? 700 : self.maxInterval
        let dir = data ?? FileManager.default.temporaryDirectory.appendingPathComponent("tortoise-torture-\(getpid())").path
        let broker = try BrokerUnderTest(binary: tortoised, directory: dir,
                                         extraArguments: (compactFrom.map { ["--compact-from", String($0)] } ?? [])
                                             + (compactCheck.map { ["--compact-check", String($0)] } ?? []))
        try broker.start()
        var configuration = TortoiseClientConfiguration(host: "127.0.0.1", port: broker.port, environment: [:])
        configuration.connectTimeout = .seconds(2)
        let config = configuration
        let ledger = Ledger()
        let running = NIOLockedValueBox(true)

        // Producers.
        let producerTasks = (0..<producers).map { p in
            Task {
                var n = 0
                var client: TortoiseClient?
                while running.withLockedValue({ $0 }) {
                    do {
                        if client == nil { client = try await TortoiseClient.connect(config) }
                        n += 1
                        let queue = "q\(n % 4)"
                        let id = try await client!.put(queue, "task p\(p) n\(n)")
                        ledger.confirmedPut(id)
                    } catch {
                        client = nil
                        try? await Task.sleep(for: .milliseconds(50))
                    }
                }
            }
        }

        // Workers.
        var options = TortoiseWorker.Options()
        options.reconnectDelay = .milliseconds(30)
        options.maxReconnectDelay = .milliseconds(300)
        options.touchInterval = nil
        options.onEvent = { event in ledger.event(event) }
        let workerObjects = (0..<workers).map { _ in
            TortoiseWorker(configuration: config, queues: ["q0", "q1", "q2", "q3"], options: options) { task in
                ledger.delivered(task.id)
                let roll = Int.random(in: 0..<100)
                if roll < 12 {
                    let error = "torture failure kind\(Int.random(in: 0..<5)) for \(task.text)"
                    ledger.nackSent(task.id, error)
                    throw TortureError(text: error)
                }
                if roll < 25 { throw TortoiseRequeue() }
                ledger.ackSent(task.id)
            }
        }
        let workerTasks = workerObjects.map { w in Task { try? await w.run() } }

        // The operator replays some failures now and then.
        let operatorTask = Task {
            var client: TortoiseClient?
            while running.withLockedValue({ $0 }) {
                try? await Task.sleep(for: .milliseconds(Int.random(in: 200...800)))
                do {
                    if client == nil { client = try await TortoiseClient.connect(config) }
                    let n = try await client!.replay("kind\(Int.random(in: 0..<5))")
                    ledger.replayed(n)
                } catch {
                    client = nil
                }
            }
        }

        // The chaos.
        for k in 0..<kills {
            try await Task.sleep(for: .milliseconds(Int.random(in: 50...maxInterval)))
            broker.kill9()
            try broker.start()
            FileHandle.standardError.write(Data("kill \(k + 1)/\(kills): restarted cleanly; \(ledger.summary)\n".utf8))
        }

        // Quiet down: stop producing and replaying, let the workers drain the queues.
        running.withLockedValue { $0 = false }
        for t in producerTasks { await t.value }
        await operatorTask.value
        let checker = try await TortoiseClient.connect(config)
        var stats = try await checker.stats()
        for _ in 0..<600 {
            let busy = stats.queues.values.reduce(0) { $0 + $1.ready + $1.inflight + $1.delayed }
            if busy == 0 { break }
            try await Task.sleep(for: .milliseconds(100))
            stats = try await checker.stats()
        }
        for w in workerObjects { w.stop() }
        for t in workerTasks { await t.value }
        let failed = try await checker.failed("", limit: Wire.maxLimit)
        let problems = try await ledger.check(stats: stats, failed: failed, client: checker)
        await checker.close()
        broker.terminate()
        if data == nil { try? FileManager.default.removeItem(atPath: dir) }

        print("crash cycles survived: \(kills)")
        print(ledger.summary)
        print("failed store at the end: \(failed.total) tasks")
        if problems.isEmpty {
            print("0 problems: every confirmed PUT was acked or is in the failed store; no ACKed task came back; no task in two places; errors kept; indexes agree")
        } else {
            for p in problems.prefix(30) { print("PROBLEM: \(p)") }
            print("\(problems.count) problems")
            throw ExitCode(1)
        }
    }
}

struct TortureError: Error, CustomStringConvertible {
    var text: String
    var description: String { text }
}
