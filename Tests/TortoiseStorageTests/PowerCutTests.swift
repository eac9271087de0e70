import Foundation
import Testing
import TortoiseTestSupport
@testable import TortoiseStorage

/// Power cuts on a real disk (``FaultyDisk``): what reached the disk, and nothing that
/// only the page cache held, is what the store opens on.
@Suite(.serialized) struct PowerCutTests {
    /// A change whose record is the first in the log's other file is confirmed by a flush
    /// of that file. The records still unflushed at the end of the first file (a delivery,
    /// which nobody waits for) must reach the disk with it: the replay reads the batches
    /// in an unbroken run of numbers, and would stop at the lost one before the confirmed.
    @Test func aChangeConfirmedInTheLogsOtherFileSurvivesAPowerCut() async throws {
        guard let disk = faultyDisk() else { return }
        defer { disk.tearDown() }
        let dir = disk.mountPoint + "/data"
        // Room for two records of 600 bytes in a log file, but not three. The power cut
        // comes before any checkpoint of LMDB's file: only the log holds these changes.
        var c = testConfiguration(dir, backgroundCheckpoints: false, logFileSize: 1024)
        c.compactCheckInterval = nil
        let store = try TaskStore(c)
        let first = try await store.put("q", String(repeating: "a", count: 600))
        #expect(try await store.take("q")?.id == first)
        #expect(store.logSwitches == 0)
        let second = try await store.put("q", String(repeating: "b", count: 600))
        #expect(store.logSwitches == 1, "the second put's record did not go to the other file")

        let afterCut = try disk.powerCut()
        store.close()
        let reopened = try openStore(afterCut + "/data")
        // The delivery came back at open, to the front.
        #expect(try reopened.readyIDs("q") == [first, second], "a confirmed put was lost in the power cut")
        reopened.close()
    }

    /// Random mixes of durable changes (put, ack, nack, requeue, delayed requeue, replay,
    /// delete) and changes nobody waits for (take, claim, release), with log files small
    /// enough to move from one to the other every few changes and checkpoints now and
    /// then; after each mix, a power cut. The store opened on what reached the disk holds
    /// exactly the tasks the confirmed changes left, each in its place (ready, delayed or
    /// failed), with counts to match.
    @Test func confirmedChangesSurvivePowerCutsAtRandomPoints() async throws {
        guard let disk = faultyDisk() else { return }
        defer { disk.tearDown() }
        let dir = disk.mountPoint + "/data"
        var c = testConfiguration(dir, backgroundCheckpoints: false, logFileSize: 2048)
        c.compactCheckInterval = nil
        c.maxDeliveries = 0
        let store = try TaskStore(c)
        // TORTOISE_SEED=n runs the mix a failure printed again.
        var rng = SplitMix64(seed: ProcessInfo.processInfo.environment["TORTOISE_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0 ... .max))
        let seed = rng.state
        let queues = ["a", "b"]
        // What the confirmed changes left: live tasks by queue (ready or held), and failures.
        var live: [TaskID: String] = [:]
        var held: [TaskID] = []
        var failed: Set<TaskID> = []
        var delayed: Set<TaskID> = []
        var failedQueues: [TaskID: String] = [:]
        var switchesSeen = 0
        for cut in 1...20 {
            // A checkpoint at the start of each mix frees the log's other file, so that
            // the log can move to it once this one is full.
            try store.flushData()
            for _ in 0..<Int.random(in: 5...40, using: &rng) {
                let queue = queues.randomElement(using: &rng)!
                let dice = Int.random(in: 0..<100, using: &rng)
                switch dice {
                case 0..<35:
                    // Now and then a record bigger than a whole log file.
                    let most = Int.random(in: 0..<10, using: &rng) == 0 ? 3000 : 700
                    let payload = String(repeating: "p", count: Int.random(in: 0...most, using: &rng))
                    live[try await store.put(queue, payload)] = queue
                case 35..<50:
                    if let t = try await store.take(queue) { held.append(t.id) }
                case 50..<58:
                    if let t = try store.peekReady(queue, skipping: []) {
                        _ = try await store.perform(.claim(t.id))
                        held.append(t.id)
                    }
                case 58..<70 where !held.isEmpty:
                    let id = held.remove(at: Int.random(in: 0..<held.count, using: &rng))
                    _ = try await store.perform(.ack(id))
                    live[id] = nil
                case 70..<78 where !held.isEmpty:
                    let id = held.remove(at: Int.random(in: 0..<held.count, using: &rng))
                    _ = try await store.perform(.nack(id, error: "boom \(Int.random(in: 0..<3, using: &rng))"))
                    failedQueues[id] = live[id]
                    live[id] = nil
                    failed.insert(id)
                case 78..<84 where !held.isEmpty:
                    let id = held.remove(at: Int.random(in: 0..<held.count, using: &rng))
                    _ = try await store.perform(Bool.random(using: &rng) ? .release(id) : .requeue(id, readyAt: nil))
                case 84..<86 where !held.isEmpty:
                    // Back in an hour: delayed, not ready.
                    let id = held.remove(at: Int.random(in: 0..<held.count, using: &rng))
                    _ = try await store.perform(.requeue(id, readyAt: currentMillis() + 3_600_000))
                    delayed.insert(id)
                case 86..<90 where !failed.isEmpty:
                    let replayed = try store.allFailures().filter { $0.queue == queue }.map(\.id)
                    var query = FailedQuery()
                    query.queues = [queue]
                    _ = try await store.perform(.replay(query))
                    for id in replayed {
                        failed.remove(id)
                        live[id] = queue
                    }
                case 90..<92 where !failed.isEmpty:
                    let deleted = try store.allFailures().filter { $0.queue == queue }.map(\.id)
                    var query = FailedQuery()
                    query.queues = [queue]
                    _ = try await store.perform(.delete(query))
                    failed.subtract(deleted)
                case 92..<95:
                    try store.flushData()
                case 95..<100:
                    // A burst submitted at once: puts, deliveries and acks share batches,
                    // and flushes overlap the next batch.
                    let acks = held.shuffled(using: &rng).prefix(Int.random(in: 0...3, using: &rng))
                    held.removeAll { acks.contains($0) }
                    var ops: [StoreOperation] = acks.map { .ack($0) }
                    for _ in 0..<Int.random(in: 1...8, using: &rng) {
                        ops.append(Bool.random(using: &rng) ? .put(queue: queue, payload: Array(repeating: 7, count: 300)) : .take(queue: queue))
                    }
                    for result in await store.performAll(ops) {
                        switch try result.get() {
                        case .put(let id): live[id] = queue
                        case .taken(let t?): held.append(t.id)
                        default: break
                        }
                    }
                    for id in acks { live[id] = nil }
                default:
                    break
                }
            }
            switchesSeen = store.logSwitches
            let afterCut = try disk.powerCut()
            var r = testConfiguration(afterCut + "/data")
            r.maxDeliveries = 0
            r.compactFilesFrom = nil
            let reopened = try TaskStore(r)
            var ready: [TaskID: String] = [:]
            for q in queues {
                for id in try reopened.readyIDs(q) {
                    #expect(ready[id] == nil, "task \(id) is twice in the ready tables (seed \(seed), cut \(cut))")
                    ready[id] = q
                }
            }
            let waiting = live.filter { !delayed.contains($0.key) }
            #expect(ready == waiting, "after power cut \(cut) (seed \(seed)): missing \(Set(waiting.keys).subtracting(ready.keys).sorted()), unexpected \(Set(ready.keys).subtracting(waiting.keys).sorted())")
            #expect(Set(try reopened.allFailures().map(\.id)) == failed, "failures after power cut \(cut) (seed \(seed))")
            let counts = try reopened.counts()
            for q in queues {
                #expect((counts[q]?.ready ?? 0) == waiting.values.filter { $0 == q }.count, "ready count of \(q) after power cut \(cut) (seed \(seed))")
                #expect((counts[q]?.inflight ?? 0) == 0)
                #expect((counts[q]?.delayed ?? 0) == delayed.filter { live[$0] == q }.count, "delayed count of \(q) after power cut \(cut) (seed \(seed))")
                #expect((counts[q]?.failed ?? 0) == failedQueues.filter { failed.contains($0.key) && $0.value == q }.count, "failed count of \(q) after power cut \(cut) (seed \(seed))")
            }
            reopened.close()
        }
        // The log moved from one file to the other 30 to 50 times in 30 runs.
        #expect(switchesSeen >= 10, "the log moved \(switchesSeen) times: the test did not cover what it is for")
        store.close()
    }

    /// A child process writes at full speed on the disk, with small log files, a
    /// compaction looked at every 50 ms and its environment opened again after every
    /// replay or delete, its checkpoints running; at a random moment it is stopped (every
    /// thread of it, so that no flush is half done), and the power is cut: whatever it was
    /// doing (a checkpoint's writeback, a compacted copy being written or put in place, a
    /// log file being switched, the environment being opened again), the store opened on
    /// the copy holds every change the child had reported durable (puts, acks, failures,
    /// found through the word index too, and replays and deletes of them). Then the child
    /// is killed and the next round goes on on the disk as the crash left it.
    @Test func aPowerCutAtAnyMomentLosesNothingReported() async throws {
        guard let disk = faultyDisk(megabytes: 128) else { return }
        defer { disk.tearDown() }
        let dir = disk.mountPoint + "/data"
        // The last change to each task the child reported durable: P put, A acked,
        // N failed, R replayed, D deleted. Nothing is known after T (taken: an ack or a
        // nack may have been done and not reported) or U (a failure whose queue's
        // failures were being replayed or deleted: "Q queue" came, but no R or D yet).
        var last: [TaskID: Character] = [:]
        var queueOf: [TaskID: String] = [:]
        var queues = Set<String>()
        var seen: [Character: Int] = [:]
        var compactions = 0
        var reopens = 0
        for round in 0..<8 {
            let child = try ChildProcess(CrashTests.helper, [dir, "8"],
                                         environment: ChildProcess.environment(["TORTOISE_STRESS_SMALL": "1"]), stdout: .pipe)
            let reader = LineReader(child.stdoutPipe)
            let patience = Date().addingTimeInterval(60)
            while !reader.lines.contains("ready"), Date() < patience {
                reader.drain()
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(reader.lines.first == "ready", "round \(round): the child did not start")
            let until = Date().addingTimeInterval(Double.random(in: 0.1...0.6))
            while Date() < until {
                reader.drain()
                try await Task.sleep(for: .milliseconds(5))
            }
            let afterCut = try disk.powerCut(during: child)
            // Everything it printed before it stopped is in the pipe now.
            reader.drain()
            for line in reader.lines.dropFirst() {
                let w = line.split(separator: " ")
                guard let kind = w.first?.first else { continue }
                if kind == "C" { compactions += 1; continue }
                if kind == "O" { reopens += 1; continue }
                if kind == "Q", w.count == 2 {
                    for (id, k) in last where k == "N" && queueOf[id] == String(w[1]) { last[id] = "U" }
                    continue
                }
                guard w.count >= 2, let id = TaskID(w[1]) else { continue }
                if kind == "P" {
                    queues.insert(String(w[2]))
                    queueOf[id] = String(w[2])
                }
                last[id] = kind
                seen[kind, default: 0] += 1
            }
            let (ready, failed) = try Self.tasks(in: afterCut + "/data", queues: queues.sorted())
            var wrong: [String] = []
            for (id, kind) in last {
                let isReady = ready.contains(id), isFailed = failed.contains(id)
                switch kind {
                case "P", "R": if !isReady { wrong.append("\(kind) \(id) is not ready") }
                case "A", "D": if isReady || isFailed { wrong.append("\(kind) \(id) is still there") }
                case "N": if !isFailed || isReady { wrong.append("\(kind) \(id) is not (only) in the failed store") }
                default: break
                }
            }
            #expect(wrong.isEmpty, "round \(round): \(wrong.count) tasks not where the child was told they are after the power cut, e.g. \(wrong.sorted().prefix(5))")
            try disk.drop(copy: afterCut)
        }
        #expect((seen["P"] ?? 0) > 1000, "only \(seen["P"] ?? 0) puts: the test did not cover what it is for")
        for kind: Character in ["A", "N", "R", "D"] {
            #expect((seen[kind] ?? 0) > 0, "no \(kind) line: the test did not cover what it is for")
        }
        #expect(compactions > 0, "no compaction while the child ran: the test did not cover what it is for")
        #expect(reopens > 0, "the child never opened its environment again: the test did not cover what it is for")
    }

    /// The ids of the ready tasks of `queues` and of the failed tasks in the store in
    /// `dir` (opened, and closed again before this returns: its files are not held open
    /// after).
    static func tasks(in dir: String, queues: [String]) throws -> (ready: Set<TaskID>, failed: Set<TaskID>) {
        let store = try openStore(dir)
        defer { store.close() }
        var ready = Set<TaskID>()
        for q in queues { ready.formUnion(try store.readyIDs(q)) }
        // Found through the word index too: a failure must be findable, not just stored.
        var boom = FailedQuery()
        boom.words = ["boom"]
        let found = try store.failed(boom, limit: .max).tasks.map(\.id)
        let failed = Set(try store.allFailures().map(\.id))
        #expect(Set(found) == failed, "the word index and the failed store disagree after the power cut")
        return (ready, failed)
    }
}

/// A small seeded generator, so that a failing run can be told by its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
