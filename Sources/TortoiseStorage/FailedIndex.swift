import HeapModule

/// The failed store and its secondary indexes, kept in the caller's transaction so that
/// they never disagree; and the query planner that answers searches from them.
struct FailedIndex {
    let t: StoreTables

    // MARK: Changes

    func add(_ f: FailedTask, _ txn: borrowing LMDBTransaction) throws(StorageError) {
        let p = StoreTables.posting(f.failedAt, f.id)
        try txn.put(t.failed, StoreTables.taskKey(f.id), f.encoded())
        try txn.put(t.byTime, p, [])
        for w in ErrorWords.words(f.error) { try txn.put(t.byWord, Array(w.utf8), p) }
        try txn.put(t.byQueue, Array(f.queue.utf8), p)
        try txn.put(t.byGroup, f.group.bigEndianBytes, p)
        let gq = StoreTables.groupQueueKey(f.group, f.queue)
        let n = try txn.get(t.groupQueues, gq).map { UInt64(bigEndianBytes: $0) } ?? 0
        try txn.put(t.groupQueues, gq, (n + 1).bigEndianBytes)
    }

    /// Removes failures and their index entries. Every table's entries are deleted in key
    /// order through one cursor, which finds each next one from where it stands instead
    /// of from the root: a `REPLAY` or `DELETE` of many failures holds the writer, and
    /// every other change waits for it (docs/benchmarks.md, "Failure search").
    func remove(all failures: [FailedTask], _ txn: borrowing LMDBTransaction) throws(StorageError) {
        guard !failures.isEmpty else { return }
        // Newest first: the postings' own order (see ``StoreTables/posting(_:_:)``).
        let sorted = failures.sorted { ($0.failedAt, $0.id) > ($1.failedAt, $1.id) }
        let postings = sorted.map { StoreTables.posting($0.failedAt, $0.id) }
        try txn.withCursor(t.failed) { (c) throws(StorageError) in
            for id in sorted.map(\.id).sorted() { try c.delete(StoreTables.taskKey(id)) }
        }
        try txn.withCursor(t.byTime) { (c) throws(StorageError) in
            for p in postings { try c.delete(p) }
        }
        // Key, then posting: the order of a sorted-duplicate table. (Postings are already
        // in order within a key: the sort is stable.)
        func deletePairs(_ db: LMDBDatabase, _ keys: (FailedTask) -> [[UInt8]]) throws(StorageError) {
            var pairs: [(key: [UInt8], posting: Int)] = []
            for (i, f) in sorted.enumerated() { for k in keys(f) { pairs.append((k, i)) } }
            pairs.sort { a, b in
                a.key.lexicographicallyPrecedes(b.key) || (a.key == b.key && a.posting < b.posting)
            }
            try txn.withCursor(db) { (c) throws(StorageError) in
                for (k, i) in pairs { try c.delete(k, value: postings[i]) }
            }
        }
        try deletePairs(t.byWord) { ErrorWords.words($0.error).map { Array($0.utf8) } }
        try deletePairs(t.byQueue) { [Array($0.queue.utf8)] }
        try deletePairs(t.byGroup) { [$0.group.bigEndianBytes] }
        var perGroupQueue: [[UInt8]: UInt64] = [:]
        for f in sorted { perGroupQueue[StoreTables.groupQueueKey(f.group, f.queue), default: 0] += 1 }
        for (gq, removed) in perGroupQueue.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            let n = try txn.get(t.groupQueues, gq).map { UInt64(bigEndianBytes: $0) } ?? 0
            if n <= removed { try txn.delete(t.groupQueues, gq) } else { try txn.put(t.groupQueues, gq, (n - removed).bigEndianBytes) }
        }
    }

    func load(_ id: TaskID, _ txn: borrowing LMDBTransaction) throws(StorageError) -> FailedTask? {
        guard let b = try txn.get(t.failed, StoreTables.taskKey(id)) else { return nil }
        return try FailedTask(id: id, decoding: b)
    }

    // MARK: Planning

    /// Calls `body` with every failure matching `query`, newest first, until it returns
    /// false. `body` gets the record only when a residual term needed it or `wantRecord`
    /// asks for it; otherwise nil (the caller loads what it needs).
    func forEachMatch(
        _ query: FailedQuery, _ txn: borrowing LMDBTransaction,
        _ body: (Millis, TaskID, FailedTask?) throws(StorageError) -> Bool
    ) throws(StorageError) {
        // Index terms other than the driver are checked by pair lookups.
        let lookups = lookups(query)
        func accept(_ at: Millis, _ id: TaskID, skip: Int?, _ txn: borrowing LMDBTransaction) throws(StorageError) -> (Bool, FailedTask?) {
            try self.accept(at, id, query, lookups, skip: skip, txn)
        }

        if !query.ids.isEmpty {
            var found: [(Millis, TaskID)] = []
            for id in Set(query.ids) where query.ids.allSatisfy({ $0 == id }) {
                if let f = try load(id, txn) { found.append((f.failedAt, id)) }
            }
            found.sort { ($0.0, $0.1) > ($1.0, $1.1) }
            for (at, id) in found {
                let (ok, f) = try accept(at, id, skip: nil, txn)
                if ok, try !body(at, id, f) { return }
            }
            return
        }

        // The newest-first start for a `before:` bound.
        let start: [UInt8]? = query.before.map { StoreTables.posting($0 - 1, UInt64.max) }

        if !lookups.isEmpty {
            // Drive from the most selective index.
            var best = 0
            var bestCount = Int.max
            for (i, (db, key)) in lookups.enumerated() {
                let n = try txn.withCursor(db) { (c) throws(StorageError) -> Int in
                    guard try c.seek(key: key) != nil else { return 0 }
                    return try c.duplicateCount()
                }
                if n == 0 { return }
                if n < bestCount { bestCount = n; best = i }
            }
            let (db, key) = lookups[best]
            try txn.withCursor(db) { (c) throws(StorageError) in
                var e: LMDBCursor.Entry?
                if let start { e = try c.seek(key: key, valueAtOrAfter: start) } else { e = try c.seek(key: key) }
                while let entry = e {
                    let (at, id) = StoreTables.decodePosting(entry.value)
                    if let since = query.since, at < since { return }
                    let (ok, f) = try accept(at, id, skip: best, txn)
                    if ok, try !body(at, id, f) { return }
                    e = try c.nextDuplicate()
                }
            }
            return
        }

        try txn.withCursor(t.byTime) { (c) throws(StorageError) in
            var e: LMDBCursor.Entry?
            if let start { e = try c.seek(atOrAfter: start) } else { e = try c.first() }
            while let entry = e {
                let (at, id) = StoreTables.decodePosting(entry.key)
                if let since = query.since, at < since { return }
                let (ok, f) = try accept(at, id, skip: nil, txn)
                if ok, try !body(at, id, f) { return }
                e = try c.next()
            }
        }
    }

    /// The index terms of `query` as (table, key) pairs: a failure matches them when each
    /// table holds its posting under the key.
    private func lookups(_ query: FailedQuery) -> [(LMDBDatabase, [UInt8])] {
        var lookups: [(LMDBDatabase, [UInt8])] = []
        for w in query.words { lookups.append((t.byWord, Array(w.utf8))) }
        for q in query.queues { lookups.append((t.byQueue, Array(q.utf8))) }
        for g in query.groups { lookups.append((t.byGroup, g.bigEndianBytes)) }
        return lookups
    }

    /// Whether the failure `id`, failed at `at`, matches `query` (but for its `id:` terms,
    /// and the lookup numbered `skip`, which the caller walks). The record comes along
    /// when a residual term needed it.
    private func accept(_ at: Millis, _ id: TaskID, _ query: FailedQuery, _ lookups: [(LMDBDatabase, [UInt8])],
                        skip: Int?, _ txn: borrowing LMDBTransaction) throws(StorageError) -> (Bool, FailedTask?) {
        if let since = query.since, at < since { return (false, nil) }
        if let before = query.before, at >= before { return (false, nil) }
        let p = StoreTables.posting(at, id)
        for (i, (db, key)) in lookups.enumerated() where i != skip {
            if try !txn.containsPair(db, key, p) { return (false, nil) }
        }
        if query.hasResidualTerms {
            guard let f = try load(id, txn), query.matchesResidualTerms(f) else { return (false, nil) }
            return (true, f)
        }
        return (true, nil)
    }

    // MARK: Answers

    func search(_ query: FailedQuery, limit: Int, _ txn: borrowing LMDBTransaction) throws(StorageError) -> FailedPage {
        var tasks: [FailedTask] = []
        let total = try search(query, limit: limit, txn) { (f) throws(StorageError) in tasks.append(f) }
        return FailedPage(total: total, tasks: tasks)
    }

    /// Hands the newest `limit` failures matching `query` to `each`, newest first, one at
    /// a time (none is kept), and returns how many match in all.
    func search(_ query: FailedQuery, limit: Int, _ txn: borrowing LMDBTransaction,
                each: (FailedTask) throws(StorageError) -> Void) throws(StorageError) -> Int {
        var handed = 0
        if query.isEmpty {
            let total = try txn.count(t.failed)
            try forEachMatch(query, txn) { (_, id, _) throws(StorageError) in
                guard handed < limit else { return false }
                if let f = try load(id, txn) { try each(f); handed += 1 }
                return true
            }
            return total
        }
        var total = 0
        try forEachMatch(query, txn) { (_, id, f) throws(StorageError) in
            total += 1
            if handed < limit, let record = f != nil ? f : try load(id, txn) {
                try each(record)
                handed += 1
            }
            return true
        }
        return total
    }

    func ids(_ query: FailedQuery, _ txn: borrowing LMDBTransaction) throws(StorageError) -> [TaskID] {
        var ids: [TaskID] = []
        try forEachMatch(query, txn) { (_, id, _) throws(StorageError) in ids.append(id); return true }
        return ids
    }

    /// A group's figures while the matches are counted: its example is read only if the
    /// group makes the page (an error text may be as big as `--max-body`, and a query may
    /// match a great many groups).
    struct GroupTally {
        var group: UInt64
        var count: Int
        var firstFailedAt: Millis
        var lastFailedAt: Millis
        var newestID: TaskID
        /// The queues of the matching failures (nil: all of the group's, read when needed).
        var queues: Set<String>?
    }

    /// The most distinct groups counted at once for a query. Past it (errors that carry
    /// names, paths or addresses make a group each), the groups are counted one at a time
    /// instead, so that an `ERRORS` holds at most `limit` groups however many failures
    /// and groups the store has.
    static let groupsCountedAtOnce = 1 << 16

    func groups(_ query: FailedQuery, limit: Int, _ txn: borrowing LMDBTransaction,
                countedAtOnce: Int = groupsCountedAtOnce) throws(StorageError) -> [ErrorGroup] {
        guard limit > 0 else { return [] }
        var top = TopGroups(limit: limit)
        var ranked: [GroupTally]
        if query.isEmpty {
            // Straight from the group index: no failure record is read but the page's examples.
            try txn.withCursor(t.byGroup) { (c) throws(StorageError) in
                var e = try c.first()
                while let entry = e {
                    let group = UInt64(bigEndianBytes: entry.key)
                    let count = try c.duplicateCount()
                    let (last, newestID) = StoreTables.decodePosting(entry.value)
                    let oldest = try c.lastDuplicate()!
                    let (first, _) = StoreTables.decodePosting(oldest.value)
                    top.offer(GroupTally(group: group, count: count, firstFailedAt: first, lastFailedAt: last, newestID: newestID))
                    e = try c.next()
                }
            }
            ranked = top.ranked()
        } else if let tallies = try tallyAtOnce(query, txn, atMost: countedAtOnce) {
            for tally in tallies { top.offer(tally) }
            ranked = top.ranked()
        } else {
            // Too many groups match to count them all at once: one group after the other,
            // walking the group index, each group's matches counted without reading their
            // records; the queues of the groups kept are gathered after.
            let lookups = lookups(query)
            try txn.withCursor(t.byGroup) { (c) throws(StorageError) in
                var e = try c.first()
                var current: GroupTally?
                while let entry = e {
                    let group = UInt64(bigEndianBytes: entry.key)
                    if let g = current, g.group != group {
                        top.offer(g)
                        current = nil
                    }
                    let (at, id) = StoreTables.decodePosting(entry.value)
                    if query.ids.isEmpty || query.ids.allSatisfy({ $0 == id }),
                       try accept(at, id, query, lookups, skip: nil, txn).0 {
                        // Newest first: the first match of a group is its newest.
                        if current == nil {
                            current = GroupTally(group: group, count: 0, firstFailedAt: at, lastFailedAt: at, newestID: id, queues: [])
                        }
                        current!.count += 1
                        current!.firstFailedAt = at
                    }
                    e = try c.next()
                }
                if let g = current { top.offer(g) }
            }
            ranked = top.ranked()
            for i in ranked.indices {
                var narrowed = query
                narrowed.groups.append(ranked[i].group)
                ranked[i].queues = try tallyAtOnce(narrowed, txn, atMost: 1)?.first?.queues ?? []
            }
        }
        var result: [ErrorGroup] = []
        for g in ranked {
            let example = try load(g.newestID, txn)?.error ?? ""
            let queues: [String]
            if let matched = g.queues { queues = matched.sorted() } else { queues = try queuesOf(g.group, txn) }
            result.append(ErrorGroup(group: g.group, example: example, count: g.count, queues: queues,
                                     firstFailedAt: g.firstFailedAt, lastFailedAt: g.lastFailedAt))
        }
        return result
    }

    /// Counts the failures matching `query` by group, or returns nil once more than
    /// `atMost` groups turned up.
    private func tallyAtOnce(_ query: FailedQuery, _ txn: borrowing LMDBTransaction, atMost: Int) throws(StorageError) -> [GroupTally]? {
        var tallies: [GroupTally] = []
        var index: [UInt64: Int] = [:]
        var tooMany = false
        try forEachMatch(query, txn) { (at, id, loaded) throws(StorageError) in
            let f: (group: UInt64, queue: String)
            if let loaded {
                f = (loaded.group, loaded.queue)
            } else {
                // Read in place: the error text and payload stay where they are.
                guard let fields = try txn.withValue(t.failed, StoreTables.taskKey(id), FailedTask.groupAndQueue) else { return true }
                f = fields
            }
            if let i = index[f.group] {
                tallies[i].count += 1
                tallies[i].firstFailedAt = min(tallies[i].firstFailedAt, at)
                tallies[i].queues!.insert(f.queue)
            } else {
                guard tallies.count < atMost else {
                    tooMany = true
                    return false
                }
                // Newest first: the first match of a group is its newest.
                index[f.group] = tallies.count
                tallies.append(GroupTally(group: f.group, count: 1, firstFailedAt: at, lastFailedAt: at, newestID: id, queues: [f.queue]))
            }
            return true
        }
        return tooMany ? nil : tallies
    }

    private func queuesOf(_ group: UInt64, _ txn: borrowing LMDBTransaction) throws(StorageError) -> [String] {
        let prefix = group.bigEndianBytes
        var out: [String] = []
        try txn.withCursor(t.groupQueues) { (c) throws(StorageError) in
            var e = try c.seek(atOrAfter: prefix)
            while let entry = e, entry.key.starts(with: prefix) {
                out.append(String(decoding: entry.key[8...], as: UTF8.self))
                e = try c.next()
            }
        }
        return out
    }
}

/// The `limit` biggest groups seen so far, most frequent first (ties: the one that failed
/// last, then the higher group number), in a heap of at most `limit` groups.
struct TopGroups {
    private struct Ranked: Comparable {
        var tally: FailedIndex.GroupTally
        var key: (Int, Millis, UInt64) { (tally.count, tally.lastFailedAt, tally.group) }
        static func < (a: Ranked, b: Ranked) -> Bool { a.key < b.key }
        static func == (a: Ranked, b: Ranked) -> Bool { a.key == b.key }
    }

    let limit: Int
    private var heap = Heap<Ranked>()

    init(limit: Int) { self.limit = limit }

    mutating func offer(_ tally: FailedIndex.GroupTally) {
        let r = Ranked(tally: tally)
        if heap.count < limit {
            heap.insert(r)
        } else if let least = heap.min, least < r {
            _ = heap.replaceMin(with: r)
        }
    }

    /// The groups kept, most frequent first.
    func ranked() -> [FailedIndex.GroupTally] {
        heap.unordered.sorted { $0 > $1 }.map(\.tally)
    }
}
