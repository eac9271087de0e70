import Foundation
import Testing
@testable import TortoiseStorage
import TortoiseTestSupport

/// Random operations, in random batches, with closes and reopens, small redo-log files
/// and frequent compactions, checked after every batch against a plain in-memory model
/// of what the store promises: FIFO per queue with returned tasks back at their place at
/// the front, delivery counts and the delivery limit, delays, replays and deletes by
/// query, retention, per-queue counts, and searches answered from the indexes.
@Suite struct StoreModelTests {
    /// Seeds 1–3; `TORTOISE_MODEL_SEEDS=N` runs seeds 1–N (a longer hunt, by hand).
    static let seeds: [UInt64] = Array(1...UInt64(ProcessInfo.processInfo.environment["TORTOISE_MODEL_SEEDS"].flatMap { UInt64($0) } ?? 3))

    @Test(arguments: seeds)
    func randomOperationsAgreeWithAModel(seed: UInt64) async throws {
        var run = try ModelRun(directory: freshDirectory("model-\(seed)"), seed: seed)
        defer { run.store.close() }
        for step in 1...400 {
            try await run.randomBatch()
            if step % 20 == 0 { try run.checkEverything() }
            if step % 100 == 70 {
                try await run.drain()
                try await Task.sleep(for: .milliseconds(60))  // a few looks for a compaction
            }
            if step % 100 == 0 { try await run.reopen(); try run.checkEverything() }
        }
        // The run must have exercised what it checks, or it checks nothing.
        #expect(run.seen.isSuperset(of: ModelRun.allKinds), "not exercised: \(ModelRun.allKinds.subtracting(run.seen).sorted())")
        #expect(run.compactions > 0)
        #expect(run.environmentReopens > 0)
        print("model seed \(seed): \(run.compactions) compactions, \(run.environmentReopens) reopened environments, \(run.nextSeq) puts and replays")
    }
}

struct ModelDifference: Error, CustomStringConvertible {
    var text: String
    var description: String { "the store and the model differ:\n" + text }
}

struct ModelRun {
    enum State: Equatable { case ready, inflight, delayed(Millis) }
    struct ModelTask { var queue: String; var payload: [UInt8]; var seq: Int; var deliveries: Int; var replays: Int; var state: State }

    /// What an operation came to: its outcome, or the code of its error.
    enum Outcome: Equatable { case success(StoreOutcome), failure(StorageError.Code) }

    static let queues = ["mail", "pdf", "x:y-z.1"]
    static let maxDeliveries = 3
    static let allKinds: Set<String> = ["take", "claim", "ack", "nack", "requeue", "delayed", "promote", "release", "limit",
                           "replay", "delete", "prune", "bad id"]
    static let errors = [
        "SMTP timeout after 30s", "SMTP timeout after 45s", "connection refused to 10.0.0.7:25",
        "KeyError: 'user_1234'", "Ünïcode fehler in Zeile 17", "disk quota exceeded",
        "request 9f86d081884c7d65 failed", "Timeout while rendering page 3",
    ]
    static let payloadWords = ["alice", "bob", "invoice", "Réport", "zebra"]

    let directory: String
    var store: TaskStore
    var rng: SeededGenerator
    var tasks: [TaskID: ModelTask] = [:]
    var failures: [TaskID: FailedTask] = [:]
    var nextSeq = 0
    var pruned = 0
    var batchStart: Millis = 0
    /// Compactions so far, at open and while running.
    var compactions = 0
    var environmentReopens = 0
    var seen: Set<String> = []
    /// What happened to each task, to explain a difference.
    var history: [TaskID: [String]] = [:]

    init(directory: String, seed: UInt64) throws {
        self.directory = directory
        rng = SeededGenerator(seed: seed)
        store = try Self.open(directory)
    }

    static func open(_ directory: String) throws -> TaskStore {
        var c = testConfiguration(directory, logFileSize: 4 << 10)
        c.maxDeliveries = maxDeliveries
        c.compactFilesFrom = 32 << 10
        c.compactCheckInterval = .milliseconds(20)
        // Replays and deletes of several failures take them in several slices, and have
        // the environment opened again after them.
        c.failuresPerSlice = 2
        c.reopenAfterRemovingFailures = 2
        return try TaskStore(c)
    }

    // MARK: Choosing operations

    mutating func pick<T>(_ items: [T]) -> T? { items.isEmpty ? nil : items[Int.random(in: 0..<items.count, using: &rng)] }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }

    var inflightIDs: [TaskID] { tasks.filter { $0.value.state == .inflight }.map(\.key).sorted() }

    func readyOrder(_ queue: String) -> [TaskID] {
        tasks.filter { $0.value.queue == queue && $0.value.state == .ready }.sorted { $0.value.seq < $1.value.seq }.map(\.key)
    }

    mutating func randomPayload() -> [UInt8] {
        var text = (0..<Int.random(in: 1...3, using: &rng)).map { _ in pick(Self.payloadWords)! }.joined(separator: " ")
        text += " #\(Int.random(in: 0..<1000, using: &rng))"
        var bytes = Array(text.utf8)
        if chance(0.1) { bytes += [0xFF, 0x00, 0xC3] }  // not UTF-8
        if chance(0.1) { bytes += Array(repeating: UInt8(ascii: "."), count: 6_000) }  // overflow pages
        return bytes
    }

    /// A query of zero to three terms drawn from what the failures hold.
    mutating func randomQuery() -> FailedQuery {
        var q = FailedQuery()
        let known = failures.values.sorted { $0.id < $1.id }
        for _ in 0..<Int.random(in: 0...3, using: &rng) {
            switch Int.random(in: 0..<8, using: &rng) {
            case 0: q.words.append(pick(["smtp", "timeout", "after", "30s", "fehler", "ünïcode", "user_1234", "page", "nothing"])!)
            case 1: q.phrases.append(pick(["timeout after", "refused to 10", "in zeile", "quota"])!)
            case 2: q.queues.append(pick(Self.queues)!)
            case 3: if let f = pick(known) { q.ids.append(f.id) }
            case 4: if let f = pick(known) { q.since = f.failedAt }
            case 5: if let f = pick(known) { q.before = f.failedAt + Millis(Int.random(in: 0...1, using: &rng)) }
            case 6: q.payloadTexts.append(pick(["alice", "réport", "voice", "zeb"])!)
            default: q.groups.append(ErrorFingerprint.group(of: pick(Self.errors)!))
            }
        }
        return q
    }

    /// One operation, drawn from what the model holds now.
    mutating func randomOperation() -> StoreOperation {
        let q = pick(Self.queues)!
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<30: return .put(queue: q, payload: randomPayload())
        case 30..<45: return .take(queue: q)
        case 45..<60: return pick(inflightIDs).map { .ack($0) } ?? .take(queue: q)
        case 60..<70: return pick(inflightIDs).map { .nack($0, error: pick(Self.errors)!) } ?? .put(queue: q, payload: randomPayload())
        case 70..<80:
            guard let id = pick(inflightIDs) else { return .take(queue: q) }
            let now = currentMillis()
            let readyAt: Millis? = pick([nil, now - 5_000, now + 25, now + 3_600_000])!
            return .requeue(id, readyAt: readyAt)
        case 80..<85: return pick(inflightIDs).map { .release($0) } ?? .take(queue: q)
        case 85..<88: return .replay(randomQuery())
        case 88..<91: return .delete(randomQuery())
        case 91..<93:
            let at = pick(failures.values.map(\.failedAt).sorted()) ?? currentMillis()
            return .prune(olderThan: at, limit: 1_000)
        case 93..<96: return .ack(TaskID(Int.random(in: 1...5_000, using: &rng)))
        default: return .promoteDue
        }
    }

    // MARK: The model

    /// What `op` does to the model. The batch's clock is known only within `earliest` and
    /// `latest`: failure times are read back from the store and checked against them, and
    /// a delay that ends between them may have ended or not, so there the store's answer
    /// (`told`) says which, and the model checks that it is a possible one.
    mutating func applyToModel(_ op: StoreOperation, earliest: Millis, latest: Millis, told: Outcome) -> Outcome {
        switch op {
        case .put:
            preconditionFailure("puts get their ids from the store: randomBatch models them")
        case let .take(queue):
            guard let id = readyOrder(queue).first else { return .success(.taken(nil)) }
            tasks[id]!.state = .inflight
            tasks[id]!.deliveries += 1
            let t = tasks[id]!
            seen.insert("take")
            return .success(.taken(DeliveredTask(id: id, queue: queue, payload: t.payload, delivery: t.deliveries)))
        case let .claim(id):
            guard tasks[id]?.state == .ready else { return .failure(.notFound) }
            tasks[id]!.state = .inflight
            tasks[id]!.deliveries += 1
            seen.insert("claim")
            return .success(.claimed)
        case let .ack(id):
            guard tasks[id]?.state == .inflight else { seen.insert("bad id"); return .failure(.notFound) }
            tasks[id] = nil
            seen.insert("ack")
            return .success(.acked)
        case let .nack(id, error):
            guard let t = tasks[id], t.state == .inflight else { return .failure(.notFound) }
            fail(id, error: error)
            seen.insert("nack")
            return .success(.failed(queue: t.queue))
        case let .requeue(id, readyAt):
            seen.insert("requeue")
            let ended = readyAt.map { $0 <= earliest || ($0 <= latest && told != .success(.returned(.delayed(queue: tasks[id]?.queue ?? "")))) }
            return giveBack(id, readyAt: ended == false ? readyAt : nil)
        case let .release(id):
            seen.insert("release")
            return giveBack(id, readyAt: nil)
        case .promoteDue:
            var perQueue: [String: Int] = [:]
            var onTheEdge: [String: [(Millis, TaskID)]] = [:]
            for (id, t) in tasks {
                guard case .delayed(let at) = t.state else { continue }
                if at <= earliest {
                    tasks[id]!.state = .ready
                    perQueue[t.queue, default: 0] += 1
                } else if at <= latest {
                    onTheEdge[t.queue, default: []].append((at, id))
                }
            }
            // Of the delays that end within the batch's clock, the store promoted the
            // soonest, as many as it says (if it says a possible number).
            if case .success(.promoted(let said)) = told {
                for (q, edge) in onTheEdge {
                    let n = (said[q] ?? 0) - (perQueue[q] ?? 0)
                    guard n > 0, n <= edge.count else { continue }
                    for (_, id) in edge.sorted(by: { $0 < $1 }).prefix(n) { tasks[id]!.state = .ready }
                    perQueue[q, default: 0] += n
                }
            }
            if !perQueue.isEmpty { seen.insert("promote") }
            return .success(.promoted(perQueue))
        case let .replay(query):
            var perQueue: [String: Int] = [:]
            for f in matching(query).sorted(by: Self.newestFirst).reversed() {
                failures[f.id] = nil
                tasks[f.id] = ModelTask(queue: f.queue, payload: f.payload, seq: nextSeq, deliveries: 0, replays: f.replays + 1, state: .ready)
                nextSeq += 1
                perQueue[f.queue, default: 0] += 1
            }
            if !perQueue.isEmpty { seen.insert("replay") }
            return .success(.replayed(perQueue))
        case let .delete(query):
            let gone = matching(query)
            for f in gone { failures[f.id] = nil }
            if !gone.isEmpty { seen.insert("delete") }
            return .success(.deleted(gone.count))
        case let .prune(olderThan, limit):
            let gone = failures.values.filter { $0.failedAt < olderThan }.sorted(by: Self.newestFirst).reversed().prefix(limit)
            for f in gone { failures[f.id] = nil }
            pruned += gone.count
            if !gone.isEmpty { seen.insert("prune") }
            return .success(.pruned(gone.count))
        }
    }

    /// Failure times are the batch's clock, known here only within bounds: the model
    /// writes the earliest until the store's answer fills them in. (No search can tell
    /// the two apart: every batch starts 2 ms after the newest failure before it. The
    /// order of a replay could, so no batch replays after it may have failed a task.)
    mutating func fail(_ id: TaskID, error: String) {
        let t = tasks[id]!
        tasks[id] = nil
        failures[id] = FailedTask(id: id, queue: t.queue, error: error, group: ErrorFingerprint.group(of: error),
                                  deliveries: t.deliveries, replays: t.replays, failedAt: batchStart, payload: t.payload)
    }

    /// Returns an in-flight task; `delayedUntil`: a delay that has not ended.
    mutating func giveBack(_ id: TaskID, readyAt delayedUntil: Millis?) -> Outcome {
        guard let t = tasks[id], t.state == .inflight else { return .failure(.notFound) }
        if t.deliveries >= Self.maxDeliveries {
            fail(id, error: "delivery limit exceeded (\(t.deliveries) deliveries)")
            seen.insert("limit")
            return .success(.returned(.failed(queue: t.queue)))
        }
        if let delayedUntil {
            tasks[id]!.state = .delayed(delayedUntil)
            seen.insert("delayed")
            return .success(.returned(.delayed(queue: t.queue)))
        }
        tasks[id]!.state = .ready
        return .success(.returned(.ready(queue: t.queue)))
    }

    func matching(_ query: FailedQuery) -> [FailedTask] {
        failures.values.filter { Self.modelMatches(query, $0) }
    }

    /// The query language written out plainly, apart from the store's own matcher.
    static func modelMatches(_ q: FailedQuery, _ f: FailedTask) -> Bool {
        let words = Set(f.error.lowercased().split { !($0.isLetter || $0.isNumber || $0 == "_") }.map(String.init))
        return q.words.allSatisfy(words.contains)
            && q.phrases.allSatisfy { f.error.lowercased().contains($0) }
            && q.queues.allSatisfy { $0 == f.queue }
            && q.ids.allSatisfy { $0 == f.id }
            && (q.since.map { f.failedAt >= $0 } ?? true)
            && (q.before.map { f.failedAt < $0 } ?? true)
            && q.payloadTexts.allSatisfy { String(decoding: f.payload, as: UTF8.self).lowercased().contains($0) }
            && q.groups.allSatisfy { $0 == f.group }
    }

    static func newestFirst(_ a: FailedTask, _ b: FailedTask) -> Bool {
        a.failedAt != b.failedAt ? a.failedAt > b.failedAt : a.id > b.id
    }

    func modelCounts() -> [String: QueueCounts] {
        var out: [String: QueueCounts] = [:]
        for t in tasks.values {
            switch t.state {
            case .ready: out[t.queue, default: QueueCounts()].ready += 1
            case .inflight: out[t.queue, default: QueueCounts()].inflight += 1
            case .delayed: out[t.queue, default: QueueCounts()].delayed += 1
            }
        }
        for f in failures.values { out[f.queue, default: QueueCounts()].failed += 1 }
        return out
    }

    // MARK: Running

    /// One to eight random operations, some of them a peek-then-claim as the broker hands
    /// out tasks.
    mutating func randomBatch() async throws {
        // A delayed task due within the next few milliseconds would make `promoteDue` and
        // the clock race: let every short delay run out first.
        let shortDelays = tasks.values.compactMap { t -> Millis? in
            if case .delayed(let at) = t.state, at < currentMillis() + 60_000 { return at } else { return nil }
        }
        if let last = shortDelays.max(), last >= currentMillis() - 1 {
            try await Task.sleep(for: .milliseconds(Int(last - currentMillis()) + 3))
        }
        var ops: [StoreOperation] = []
        for _ in 0..<Int.random(in: 1...8, using: &rng) {
            var op = randomOperation()
            // The broker's way: peek at the front (stepping over tasks being claimed), then claim.
            // (Not after a take of the same queue in this batch: the broker does not mix them.)
            if case .take(let q) = op, !ops.contains(.take(queue: q)), chance(0.4) {
                let skipping = Set(ops.compactMap { if case .claim(let id) = $0 { return id } else { return nil } })
                let peeked = try store.peekReady(q, skipping: skipping)
                let modelFront = readyOrderSkipping(q, skipping)
                #expect(peeked?.id == modelFront, "peekReady(\(q)) found \(String(describing: peeked?.id)), the model \(String(describing: modelFront))")
                if let peeked { op = .claim(peeked.id) }
            }
            // A replay queues its tasks in the order they failed, and the model knows the
            // times of this batch's failures only within the batch's clock: no replay
            // after an operation that may fail a task.
            if case .replay = op, ops.contains(where: Self.mayFail) { op = .promoteDue }
            ops.append(op)
        }
        try await run(ops)
    }

    /// Empties the queues and the failed store (the delayed tasks stay), so that most of
    /// LMDB's file is free and a compaction follows.
    mutating func drain() async throws {
        var ops = inflightIDs.map { StoreOperation.ack($0) }
        for q in Self.queues { for id in readyOrder(q) { ops += [.take(queue: q), .ack(id)] } }
        try await run(ops + [.delete(FailedQuery())])
    }

    /// Submits `ops` at once (they share batches); each outcome must be the model's.
    mutating func run(_ ops: [StoreOperation]) async throws {
        while let newest = failures.values.map(\.failedAt).max(), currentMillis() <= newest + 1 {
            try await Task.sleep(for: .milliseconds(1))
        }
        let earliest = currentMillis()
        batchStart = earliest
        let results = await store.performAll(ops)
        let latest = currentMillis()
        var predicted: [Outcome] = []
        var newFailures: [TaskID] = []
        for (op, r) in zip(ops, results) {
            for id in Self.ids(op, r) { history[id, default: []].append("\(Self.brief(op)) -> \(Self.brief(r))") }
            if case let .put(queue, payload) = op {
                guard case .success(.put(let id)) = r else { Issue.record("put failed: \(r)"); continue }
                #expect(tasks[id] == nil && failures[id] == nil, "id \(id) reused")
                tasks[id] = ModelTask(queue: queue, payload: payload, seq: nextSeq, deliveries: 0, replays: 0, state: .ready)
                nextSeq += 1
                predicted.append(.success(.put(id)))
                continue
            }
            let before = Set(failures.keys)
            predicted.append(applyToModel(op, earliest: earliest, latest: latest, told: Self.outcome(r)))
            newFailures += failures.keys.filter { !before.contains($0) }
        }
        let got = results.map(Self.outcome)
        if got != predicted {
            // The first difference is the one to read: stop there.
            throw ModelDifference(text: zip(ops, zip(got, predicted)).map { op, p in
                "\(Self.brief(op)): store \(Self.brief(p.0)), model \(Self.brief(p.1))"
            }.joined(separator: "\n"))
        }
        // Fill in the new failures' times from the store, within the batch's clock.
        if !newFailures.isEmpty {
            let stored = Dictionary(uniqueKeysWithValues: try store.allFailures().map { ($0.id, $0) })
            for id in newFailures where failures[id] != nil {
                let at = try #require(stored[id]?.failedAt, "failure \(id) is not in the store")
                #expect(at >= earliest && at <= latest, "failure \(id) at \(at), batch ran \(earliest)...\(latest)")
                failures[id]!.failedAt = at
            }
        }
        #expect(try store.counts() == modelCounts())
    }

    /// Whether `op` may move a task to the failed store (the delivery limit included).
    static func mayFail(_ op: StoreOperation) -> Bool {
        switch op {
        case .nack, .requeue, .release: return true
        default: return false
        }
    }

    static func outcome(_ r: Result<StoreOutcome, StorageError>) -> Outcome {
        switch r {
        case .success(let o): return .success(o)
        case .failure(let e): return .failure(e.code)
        }
    }

    static func ids(_ op: StoreOperation, _ r: Result<StoreOutcome, StorageError>) -> [TaskID] {
        switch (op, r) {
        case (.put, .success(.put(let id))): return [id]
        case (.take, .success(.taken(let t?))): return [t.id]
        case (.claim(let id), _), (.ack(let id), _), (.nack(let id, _), _), (.requeue(let id, _), _), (.release(let id), _): return [id]
        default: return []
        }
    }

    static func brief(_ x: Any) -> String {
        let s = String(describing: x)
        return s.count > 200 ? s.prefix(200) + "..." : s
    }

    func readyOrderSkipping(_ queue: String, _ skipping: Set<TaskID>) -> TaskID? {
        readyOrder(queue).first { !skipping.contains($0) }
    }

    /// Closes and opens the store: every task in flight comes back at its place, or fails
    /// past the delivery limit.
    mutating func reopen() async throws {
        compactions += store.compactionsWhileRunning
        environmentReopens += store.environmentReopens
        store.close()
        while let newest = failures.values.map(\.failedAt).max(), currentMillis() <= newest + 1 {
            try await Task.sleep(for: .milliseconds(1))
        }
        let earliest = currentMillis()
        batchStart = earliest
        store = try Self.open(directory)
        if store.compactedAtOpen != nil { compactions += 1 }
        let latest = currentMillis()
        var newFailures: [TaskID] = []
        for id in inflightIDs {
            if case .success(.returned(.failed)) = giveBack(id, readyAt: nil) {
                newFailures.append(id)
            }
        }
        let stored = Dictionary(uniqueKeysWithValues: try store.allFailures().map { ($0.id, $0) })
        for id in newFailures {
            let at = try #require(stored[id]?.failedAt)
            #expect(at >= earliest && at <= latest)
            failures[id]!.failedAt = at
        }
    }

    /// Everything the store shows, against the model: ready order per queue, every failure
    /// whole, searches and error groups from the indexes, the pruned count.
    mutating func checkEverything() throws {
        for q in Self.queues {
            let got = try store.readyIDs(q), want = readyOrder(q)
            if got != want {
                let odd = Set(got).symmetricDifference(want).union(zip(got, want).filter { $0 != $1 }.flatMap { [$0, $1] })
                throw ModelDifference(text: "ready order of \(q): store \(got), model \(want)\n" +
                    odd.sorted().prefix(4).map { "\($0): \(history[$0, default: []].joined(separator: "; "))" }.joined(separator: "\n"))
            }
        }
        let stored = try store.allFailures().sorted { $0.id < $1.id }
        #expect(stored == failures.values.sorted { $0.id < $1.id })
        #expect(try store.prunedCount() == pruned)
        #expect(try store.counts() == modelCounts())
        for _ in 0..<6 {
            let query = randomQuery()
            let want = matching(query).sorted(by: Self.newestFirst)
            let limit = pick([1, 3, 1_000])!
            let page = try store.failed(query, limit: limit)
            #expect(page.total == want.count, "total for \(query)")
            #expect(page.tasks.map(\.id) == want.prefix(limit).map(\.id), "page for \(query)")
            let groups = try store.errorGroups(query, limit: 100)
            let wantGroups = Dictionary(grouping: want, by: \.group)
            #expect(Set(groups.map(\.group)) == Set(wantGroups.keys), "groups for \(query)")
            #expect(groups.map(\.count) == groups.map(\.count).sorted(by: >), "groups most frequent first")
            for g in groups {
                let members = try #require(wantGroups[g.group])
                #expect(g.count == members.count)
                #expect(Set(g.queues) == Set(members.map(\.queue)))
                #expect(g.firstFailedAt == members.map(\.failedAt).min() && g.lastFailedAt == members.map(\.failedAt).max())
                #expect(members.contains { $0.error == g.example })
            }
        }
    }
}
