import Foundation
import Testing
import TortoiseProtocol
import TortoiseTestSupport

/// Random work through the wire: puts, workers of overlapping queues that ack, nack,
/// requeue (some with a delay) and drop their connections, replays and deletes. After
/// each step the broker must settle where the dispatch rules say: no worker of a queue
/// idle while that queue has a ready task, no worker with two tasks, FIFO, a new task to
/// the worker idle longest, delivery numbers and every count in `STATS` as the steps left them.
@Suite(.serialized) struct DispatchModelTests {
    /// Seeds 1–2; `TORTOISE_MODEL_SEEDS=N` runs seeds 1–N (a longer hunt, by hand).
    static let seeds: [UInt64] = Array(1...UInt64(ProcessInfo.processInfo.environment["TORTOISE_MODEL_SEEDS"].flatMap { UInt64($0) } ?? 2))

    @Test(arguments: seeds)
    func randomWorkLeavesNoWorkerIdleWhileTasksWait(seed: UInt64) throws {
        var run = try DispatchRun(seed: seed, name: "dispatch-model-\(seed)")
        for step in 1...200 {
            try run.randomStep()
            try run.settle(step: step)
            // The broker orders failures by their millisecond, then by id; the model by the
            // step: a failure's step ends a millisecond before the next step starts.
            if run.failedThisStep { Thread.sleep(forTimeInterval: 0.002) }
        }
        // The seeds run by default must exercise every kind of step (a longer hunt's
        // seeds may miss a rare one, say an idle worker to drop, and need not).
        #expect(ProcessInfo.processInfo.environment["TORTOISE_MODEL_SEEDS"] != nil || run.seen.isSuperset(of: DispatchRun.allKinds), "not exercised: \(DispatchRun.allKinds.subtracting(run.seen).sorted())")
    }
}

struct DispatchRun {
    enum State: Equatable { case ready, held(worker: Int), delayed, failed }
    /// `seq`: the task's place in its queue (a returned task keeps it; a replayed one
    /// gets a new one at the back); `failedAs`: the order of failures, which a replay keeps.
    struct ModelTask { var queue: String; var deliveries: Int; var state: State; var seq: Int; var failedAs = 0 }
    /// `freeSince`: when the worker last became free (a step counter), for the longest-idle rule.
    struct Worker { var client: RawClient; var queues: [String]; var held: UInt64?; var freeSince: Int }

    static let queues = ["a", "b", "c"]
    static let maxDeliveries = 3
    static let allKinds: Set<String> = ["put", "ack", "nack", "requeue", "delay", "drop held", "drop idle",
                                        "limit", "replay", "delete", "longest idle", "returned to longest idle"]

    let broker: BrokerProcess
    let operatorClient: RawClient
    var rng: SeededGenerator
    var workers: [Worker] = []
    var tasks: [UInt64: ModelTask] = [:]
    var seen: Set<String> = []
    var counter = 0
    /// Whether the last step moved a task to the failed store.
    var failedThisStep = false
    /// The task the last step put, and the worker that must get it: the one idle longest
    /// among the queue's idle workers, if it has any.
    var expectedReceiver: (task: UInt64, worker: Int)?

    mutating func next() -> Int { counter += 1; return counter }

    init(seed: UInt64, name: String) throws {
        broker = try BrokerProcess(arguments: ["--max-deliveries", String(Self.maxDeliveries)], name: name)
        operatorClient = try broker.client()
        rng = SeededGenerator(seed: seed)
        // Four workers on overlapping sets of queues; queue c has one worker only.
        for queues in [["a"], ["a", "b"], ["b", "a"], ["b", "c"]] {
            workers.append(Worker(client: try Self.subscribed(broker, queues), queues: queues, held: nil, freeSince: next()))
        }
    }

    static func subscribed(_ broker: BrokerProcess, _ queues: [String]) throws -> RawClient {
        let c = try broker.client()
        for q in queues { guard try c.call("SUB \(q)") == .ok([]) else { throw TestFailure("SUB \(q) failed") } }
        return c
    }

    mutating func pick<T>(_ items: [T]) -> T? { items.isEmpty ? nil : items[Int.random(in: 0..<items.count, using: &rng)] }

    /// A held task comes back without ACK or NACK: ready again, delayed, or failed past
    /// the delivery limit.
    mutating func giveBack(_ id: UInt64, delayed: Bool) {
        if tasks[id]!.deliveries >= Self.maxDeliveries {
            tasks[id]!.state = .failed
            tasks[id]!.failedAs = next()
            failedThisStep = true
            seen.insert("limit")
        } else {
            tasks[id]!.state = delayed ? .delayed : .ready
        }
    }

    mutating func randomStep() throws {
        let busy = workers.indices.filter { workers[$0].held != nil }
        failedThisStep = false
        expectedReceiver = nil
        let roll = Int.random(in: 0..<100, using: &rng)
        if roll < 35 || busy.isEmpty && roll < 80 {
            let q = pick(Self.queues)!
            let idle = workers.indices.filter { workers[$0].held == nil && workers[$0].queues.contains(q) }
            let id = try operatorClient.put(q, "task \(tasks.count)")
            if let longest = idle.min(by: { workers[$0].freeSince < workers[$1].freeSince }) {
                expectedReceiver = (id, longest)
                if idle.count > 1 { seen.insert("longest idle") }
            }
            tasks[id] = ModelTask(queue: q, deliveries: 0, state: .ready, seq: next())
            seen.insert("put")
        } else if roll < 80, let w = pick(busy), let id = workers[w].held {
            let c = workers[w].client
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4:
                try expectOK(c.call("ACK \(id)"), "ACK \(id)")
                markFree(w)
                tasks[id] = nil
                seen.insert("ack")
            case 4..<6:
                let error = "boom \(id)"
                c.send("NACK \(id) \(error.utf8.count)\r\n\(error)\r\n")
                try expectOK(c.frame(), "NACK \(id)")
                markFree(w)
                tasks[id]!.state = .failed
                tasks[id]!.failedAs = next()
                failedThisStep = true
                seen.insert("nack")
            case 6..<8:
                let delay = Bool.random(using: &rng)
                try expectOK(c.call(delay ? "REQUEUE \(id) 30" : "REQUEUE \(id)"), "REQUEUE \(id)")
                markFree(w)
                giveBack(id, delayed: delay)
                if !delay { expectReturned(id, by: w) }
                seen.insert(delay ? "delay" : "requeue")
            default:
                try reconnect(w)
                giveBack(id, delayed: false)
                expectReturned(id, by: w)
                seen.insert("drop held")
            }
        } else if roll < 88, let w = pick(workers.indices.filter { workers[$0].held == nil }) {
            try reconnect(w)
            seen.insert("drop idle")
        } else {
            let q = Bool.random(using: &rng) ? "queue:\(pick(Self.queues)!)" : ""
            let failed = tasks.filter { $0.value.state == .failed && (q.isEmpty || "queue:\($0.value.queue)" == q) }
            if roll < 95 {
                try expectOK(operatorClient.call("REPLAY \(q.utf8.count)\r\n\(q)\r\n"), "REPLAY", words: [String(failed.count)])
                // Oldest failure first, each to the back of its queue.
                for (id, t) in failed.sorted(by: { $0.value.failedAs < $1.value.failedAs }) {
                    tasks[id] = ModelTask(queue: t.queue, deliveries: 0, state: .ready, seq: next())
                }
                if !failed.isEmpty { seen.insert("replay") }
            } else {
                try expectOK(operatorClient.call("DELETE \(q.utf8.count)\r\n\(q)\r\n"), "DELETE", words: [String(failed.count)])
                for id in failed.keys { tasks[id] = nil }
                if !failed.isEmpty { seen.insert("delete") }
            }
        }
    }

    /// Worker `w` gave its task back (or it was taken back): it is idle from now.
    mutating func markFree(_ w: Int) {
        workers[w].held = nil
        workers[w].freeSince = next()
    }

    /// A task worker `w` gave back (or lost), back at the front of its queue, goes to the
    /// worker of the queue idle longest: not `w`, idle shortest, when another is idle. (With
    /// none, `w` may take a task of another of its queues first: no one is expected.)
    mutating func expectReturned(_ id: UInt64, by w: Int) {
        guard tasks[id]!.state == .ready else { return }
        let q = tasks[id]!.queue
        let idle = workers.indices.filter { $0 != w && workers[$0].held == nil && workers[$0].queues.contains(q) }
        if let longest = idle.min(by: { workers[$0].freeSince < workers[$1].freeSince }) {
            expectedReceiver = (id, longest)
            seen.insert("returned to longest idle")
        }
    }

    func expectOK(_ f: ServerFrame, _ what: String, words: [String]? = nil) throws {
        guard case .ok(let w) = f, words == nil || w == words! else {
            throw TestFailure("\(what): \(f)\(words.map { ", expected OK \($0.joined(separator: " "))" } ?? "")")
        }
    }

    /// Drops worker `w`'s connection and subscribes a new one to the same queues.
    mutating func reconnect(_ w: Int) throws {
        workers[w].client.disconnect()
        workers[w].client = try Self.subscribed(broker, workers[w].queues)
        markFree(w)
    }

    /// Takes the pushes that came, then waits (up to 5 s) until no worker of a queue is
    /// idle while it has a ready task; then every figure of `STATS` must be the model's.
    mutating func settle(step: Int) throws {
        let deadline = Date().addingTimeInterval(5)
        // FIFO: what goes out of a queue while the broker settles is the front of what
        // was ready, a dropped worker's task included (unless a delay ends meanwhile).
        let checksOrder = !tasks.values.contains { $0.state == .delayed }
        var front: [String: [UInt64]] = [:]
        for (id, t) in tasks where t.state == .ready { front[t.queue, default: []].append(id) }
        for q in front.keys { front[q]!.sort { tasks[$0]!.seq < tasks[$1]!.seq } }
        var given: [String: Set<UInt64>] = [:]
        while true {
            for w in workers.indices {
                let c = workers[w].client
                while try c.hasMessage(within: 0.002) {
                    let m = try c.message()
                    guard workers[w].held == nil else {
                        throw TestFailure("step \(step): worker \(w) got task \(m.id) while it held \(workers[w].held!)")
                    }
                    guard let t = tasks[m.id], t.state == .ready || t.state == .delayed, t.queue == m.queue else {
                        throw TestFailure("step \(step): worker \(w) got task \(m.id) of \(m.queue), which the model has as \(String(describing: tasks[m.id]))")
                    }
                    guard workers[w].queues.contains(m.queue) else { throw TestFailure("worker \(w) got a task of \(m.queue)") }
                    guard m.delivery == t.deliveries + 1 else {
                        throw TestFailure("step \(step): task \(m.id) came as delivery \(m.delivery), the model says \(t.deliveries + 1)")
                    }
                    if let e = expectedReceiver, e.task == m.id, e.worker != w {
                        throw TestFailure("step \(step): task \(m.id) went to worker \(w), not to worker \(e.worker), idle longest")
                    }
                    tasks[m.id]!.deliveries += 1
                    tasks[m.id]!.state = .held(worker: w)
                    given[m.queue, default: []].insert(m.id)
                    workers[w].held = m.id
                }
            }
            let stats = try operatorClient.stats()
            let starved = Self.queues.filter { q in
                (stats.queues[q]?.ready ?? 0) > 0 && workers.contains { $0.queues.contains(q) && $0.held == nil }
            }
            let waiting = tasks.values.contains { $0.state == .delayed }
            // (A dropped connection's task and subscriptions are let go of a moment later.)
            let difference = starved.isEmpty && !waiting ? self.difference(stats) : nil
            if starved.isEmpty && !waiting && difference == nil {
                for (q, ids) in given where checksOrder && ids != Set(front[q, default: []].prefix(ids.count)) {
                    throw TestFailure("step \(step): \(q) gave out \(ids.sorted()), not the front of \(front[q, default: []])")
                }
                return
            }
            // A delayed task is ready again after 30 ms; the model cannot tell when it was
            // promoted, so it settles once none waits.
            if starved.isEmpty, waiting, Self.queues.allSatisfy({ (stats.queues[$0]?.delayed ?? 0) == 0 }) {
                for (id, t) in tasks where t.state == .delayed { tasks[id]!.state = .ready }
                continue
            }
            if Date() > deadline {
                throw TestFailure("step \(step), after 5 s: " + (difference
                    ?? "queues \(starved) have ready tasks and idle workers; STATS \(stats.queues)"))
            }
            Thread.sleep(forTimeInterval: 0.005)
        }
    }

    /// How `STATS` differs from the model, if it does.
    func difference(_ stats: StatsReply) -> String? {
        for q in Self.queues {
            let mine = tasks.values.filter { $0.queue == q }
            let want = (ready: mine.filter { $0.state == .ready }.count,
                        inflight: mine.filter { if case .held = $0.state { true } else { false } }.count,
                        failed: mine.filter { $0.state == .failed }.count,
                        workers: workers.filter { $0.queues.contains(q) }.count)
            let s = stats.queues[q]
            let got = (ready: s?.ready ?? 0, inflight: s?.inflight ?? 0, failed: s?.failed ?? 0, workers: s?.workers ?? 0)
            if got != want || (s?.delayed ?? 0) != 0 {
                return "STATS of \(q) is \(String(describing: s)), the model says \(want)"
            }
        }
        return nil
    }
}
