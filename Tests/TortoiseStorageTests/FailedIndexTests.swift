import Foundation
import Testing
@testable import TortoiseStorage

/// The indexed answers must equal a brute-force scan, for random failures and queries,
/// also after replays, deletes, retention and a reopen.
@Suite struct FailedIndexTests {
    static let vocabulary = ["timeout", "refused", "disk", "full", "nightmare", "Ümlaut", "db_error", "user", "42"]
    static let queues = ["mail", "pay", "img"]

    func randomQuery(_ rng: inout SystemRandomNumberGenerator, failures: [FailedTask], now: Millis) -> FailedQuery {
        var q = FailedQuery()
        for _ in 0..<Int.random(in: 0...2, using: &rng) {
            switch Int.random(in: 0..<8, using: &rng) {
            case 0, 1: q.words.append(Self.vocabulary.randomElement(using: &rng)!.lowercased())
            case 2: q.queues.append(Self.queues.randomElement(using: &rng)!)
            case 3: q.since = now - Millis.random(in: 0...400, using: &rng)
            case 4: q.before = now - Millis.random(in: 0...400, using: &rng)
            case 5: q.phrases.append(["disk full", "out", "user 4"].randomElement(using: &rng)!)
            case 6: q.payloadTexts.append(["p1", "P2", "x"].randomElement(using: &rng)!.lowercased())
            default:
                if let f = failures.randomElement(using: &rng) {
                    if Bool.random(using: &rng) { q.groups.append(f.group) } else { q.ids.append(f.id) }
                }
            }
        }
        return q
    }

    func check(_ store: TaskStore, _ rng: inout SystemRandomNumberGenerator, rounds: Int) throws {
        let all = try store.allFailures()
        let now = currentMillis()
        for _ in 0..<rounds {
            let q = randomQuery(&rng, failures: all, now: now)
            let expected = all.filter { q.matches($0) }.sorted { ($0.failedAt, $0.id) > ($1.failedAt, $1.id) }
            let limit = Int.random(in: 1...5, using: &rng)
            let page = try store.failed(q, limit: limit)
            #expect(page.total == expected.count, "total for \(q)")
            #expect(page.tasks.map(\.id) == expected.prefix(limit).map(\.id), "page for \(q)")
            let groups = try store.errorGroups(q, limit: 10_000)
            #expect(groups.map(\.count).reduce(0, +) == expected.count)
            for g in groups {
                let members = expected.filter { $0.group == g.group }
                #expect(g.count == members.count)
                #expect(g.queues == Set(members.map(\.queue)).sorted())
                #expect(g.lastFailedAt == members.map(\.failedAt).max())
                #expect(g.firstFailedAt == members.map(\.failedAt).min())
                // The example is the newest member's error.
                #expect(g.example == members.first?.error)
            }
            let order = groups.map { ($0.count, $0.lastFailedAt, $0.group) }
            #expect(zip(order, order.dropFirst()).allSatisfy { $0 > $1 }, "groups most frequent first for \(q)")
            let top = try store.errorGroups(q, limit: limit)
            #expect(top == Array(groups.prefix(limit)), "the first \(limit) groups for \(q)")
            // Counted one group at a time (as when a query matches very many groups).
            #expect(try store.errorGroups(q, limit: 10_000, countedAtOnce: 2) == groups, "one at a time for \(q)")
            #expect(try store.errorGroups(q, limit: limit, countedAtOnce: 1) == top, "one at a time for \(q)")
        }
    }

    @Test func indexedAnswersEqualABruteForceScan() async throws {
        var rng = SystemRandomNumberGenerator()
        let dir = freshDirectory()
        func openStore(_ dir: String) throws -> TaskStore {
            var c = testConfiguration(dir)
            // Replays and deletes of more than three failures take them in slices.
            c.failuresPerSlice = 3
            return try TaskStore(c)
        }
        var store = try openStore(dir)
        for i in 0..<150 {
            let queue = Self.queues.randomElement(using: &rng)!
            let id = try await store.put(queue, ["p1", "P2 payload", "x"].randomElement(using: &rng)! + "\(i)")
            _ = try await store.take(queue)
            let words = (0..<Int.random(in: 1...4, using: &rng)).map { _ in Self.vocabulary.randomElement(using: &rng)! }
            _ = try await store.perform(.nack(id, error: words.joined(separator: " ") + " after \(i % 7)s"))
            if i % 50 == 0 { try await Task.sleep(for: .milliseconds(120)) }
        }
        try check(store, &rng, rounds: 150)
        for _ in 0..<5 {
            let q = randomQuery(&rng, failures: try store.allFailures(), now: currentMillis())
            let before = try store.allFailures().filter { q.matches($0) }.count
            if Bool.random(using: &rng) {
                guard case .replayed(let per) = try await store.perform(.replay(q)) else { Issue.record("replay"); return }
                #expect(per.values.reduce(0, +) == before)
            } else {
                #expect(try await store.perform(.delete(q)) == .deleted(before))
            }
            #expect(try store.allFailures().filter { q.matches($0) }.isEmpty)
            try check(store, &rng, rounds: 30)
        }
        for i in 0..<10 {
            let id = try await store.put("late", "late \(i)")
            _ = try await store.take("late")
            _ = try await store.perform(.nack(id, error: "late timeout \(i)"))
            try await Task.sleep(for: .milliseconds(3))
        }
        let oldest = try #require(try store.allFailures().map(\.failedAt).min())
        guard case .pruned(let n) = try await store.perform(.prune(olderThan: oldest + 1, limit: 3)) else { return }
        #expect(n >= 1 && n <= 3)
        #expect(try store.prunedCount() == n)
        try check(store, &rng, rounds: 30)
        store.close()
        store = try openStore(dir)
        defer { store.close() }
        try check(store, &rng, rounds: 50)
    }
}
