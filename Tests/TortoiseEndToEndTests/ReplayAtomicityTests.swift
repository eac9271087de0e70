import Foundation
import Testing
import TortoiseProtocol
import TortoiseStorage

/// A large replay killed with SIGKILL leaves either all or none of its tasks replayed.
@Suite(.serialized) struct ReplayAtomicityTests {
    /// Fills a data directory with `count` failures (through the store itself, which is
    /// much faster than through a worker), then closes it.
    func seed(_ directory: String, count: Int) async throws {
        let store = try TaskStore(TaskStore.Configuration(directory: directory))
        defer { store.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<32 {
                group.addTask {
                    for i in stride(from: c, to: count, by: 32) {
                        let queue = "q\(i % 4)"
                        _ = try await store.perform(.put(queue: queue, payload: Array("payload \(i)".utf8)))
                        guard case .taken(let t?) = try await store.perform(.take(queue: queue)) else { continue }
                        _ = try await store.perform(.nack(t.id, error: "upstream 503 for order \(i)"))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    @Test func aKilledReplayIsAllOrNothing() async throws {
        let count = 4000
        let directory = BrokerProcess.freshDirectory()
        try await seed(directory, count: count)
        let broker = try BrokerProcess(directory: directory)
        var outcomes: [String] = []
        for round in 0..<10 {
            let c = try broker.client()
            let s = try c.stats()
            let failed = s.queues.values.map(\.failed).reduce(0, +)
            let ready = s.queues.values.map(\.ready).reduce(0, +)
            #expect(failed + ready == count, "round \(round): \(failed) failed + \(ready) ready")
            #expect(failed == 0 || failed == count, "round \(round): a partial replay (\(failed) failed)")
            if failed == 0 {
                print("replay completed before the kill in round \(round)")
                // Put them back in the failed store for the next round, atomically too.
                // (Deleting and reseeding would take long; instead replay is only tried when all failed.)
                break
            }
            c.send("REPLAY 8\r\nupstream\r\n")
            try await Task.sleep(for: .milliseconds(round * round * 15))
            broker.kill9()
            outcomes.append("killed after \(round * round * 15) ms")
            try broker.restart()
        }
        print("replay rounds: \(outcomes.joined(separator: ", "))")
        let final = try broker.client().stats()
        let failed = final.queues.values.map(\.failed).reduce(0, +)
        let ready = final.queues.values.map(\.ready).reduce(0, +)
        #expect(failed + ready == count)
        #expect(failed == 0 || failed == count)
        // The index agrees with the counts after the kills.
        #expect(try broker.client().failed("upstream", limit: 1).total == failed)
    }
}
