import Foundation
import Testing
import TortoiseProtocol

/// The dispatch rules: prefetch 1 across queues, longest idle first, FIFO, front on
/// return, redelivery when a worker goes, the ack timeout and the delivery limit.
@Suite(.serialized) struct DispatchTests {
    @Test func prefetchOneAcrossAllQueuesOfAWorker() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        let w = try broker.client()
        _ = try p.put("a", "a1")
        _ = try p.put("b", "b1")
        #expect(try w.call("SUB a") == .ok([]))
        #expect(try w.call("SUB b") == .ok([]))
        let first = try w.message()
        #expect(first.payload == "a1")
        #expect(try !w.hasMessage(within: 0.4), "a second task came while the first was unacknowledged")
        #expect(try w.call("ACK \(first.id)") == .ok([]))
        #expect(try w.message().payload == "b1")
    }

    @Test func aWorkerOfSeveralQueuesTakesFromThemInTurn() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        for i in 1...4 { _ = try p.put("busy", "busy\(i)") }
        for i in 1...2 { _ = try p.put("quiet", "quiet\(i)") }
        let w = try broker.client()
        #expect(try w.call("SUB busy") == .ok([]))
        #expect(try w.call("SUB quiet") == .ok([]))
        var seen: [String] = []
        for _ in 1...6 {
            let m = try w.message()
            seen.append(m.payload)
            #expect(try w.call("ACK \(m.id)") == .ok([]))
        }
        #expect(seen == ["busy1", "quiet1", "busy2", "quiet2", "busy3", "busy4"], "the backlog of busy starved quiet")
    }

    @Test func aConnectionWorksOnAtMostMaxSubscriptionsQueues() throws {
        let broker = try BrokerProcess(arguments: ["--max-subscriptions", "3"])
        let w = try broker.client()
        for q in ["a", "b", "c"] { #expect(try w.call("SUB \(q)") == .ok([])) }
        guard case let .error(code, message) = try w.call("SUB d") else { Issue.record("a fourth SUB was taken"); return }
        #expect(code == "BAD_ARGUMENT")
        #expect(message.contains("3 queues") && message.contains("--max-subscriptions"), "\(message)")
        #expect(try w.call("SUB a") == .ok([]), "a queue it already works on is no new one")
        let p = try broker.client()
        _ = try p.put("d", "d1")
        _ = try p.put("c", "c1")
        #expect(try w.message().payload == "c1")
        let stats = try p.stats()
        #expect(stats.queues["c"]?.workers == 1)
        #expect(stats.queues["d"]?.workers == 0)
        #expect(stats.queues["d"]?.ready == 1)
    }

    @Test func theLongestIdleWorkerGetsTheNextTask() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        let w1 = try broker.client()
        let w2 = try broker.client()
        #expect(try w1.call("SUB q") == .ok([]))
        #expect(try w2.call("SUB q") == .ok([]))
        _ = try p.put("q", "t1")
        #expect(try w1.message().payload == "t1")
        _ = try p.put("q", "t2")
        let t2 = try w2.message()
        #expect(t2.payload == "t2")
        #expect(try w2.call("ACK \(t2.id)") == .ok([]))
        // w1 still holds t1, so w2 is the only idle one; then w1 frees up after w2.
        _ = try p.put("q", "t3")
        let t3 = try w2.message()
        #expect(t3.payload == "t3")
        #expect(try w1.call("ACK 1") == .ok([]))
        #expect(try w2.call("ACK \(t3.id)") == .ok([]))
        _ = try p.put("q", "t4")
        #expect(try w1.message().payload == "t4", "w1 has been idle longer than w2")
    }

    @Test func fairOverManyTasks() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        let workers = try (0..<3).map { _ in try broker.client() }
        for w in workers { #expect(try w.call("SUB q") == .ok([])) }
        for i in 0..<30 { _ = try p.put("q", "t\(i)") }
        var counts = [0, 0, 0]
        var seen: [String] = []
        // Each worker acks in turn; the longest idle gets the next, so all share.
        for round in 0..<10 {
            for (i, w) in workers.enumerated() {
                let m = try w.message()
                seen.append(m.payload)
                counts[i] += 1
                #expect(try w.call("ACK \(m.id)") == .ok([]), "round \(round)")
            }
        }
        #expect(counts == [10, 10, 10])
        #expect(seen == (0..<30).map { "t\($0)" }, "FIFO")
    }

    @Test func requeuedAndLostTasksGoBackToTheFront() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        _ = try p.put("q", "t1")
        let w1 = try broker.client()
        #expect(try w1.call("SUB q") == .ok([]))
        let t1 = try w1.message()
        #expect(try w1.call("REQUEUE \(t1.id)") == .ok([]))
        let again = try w1.message()
        #expect(again.id == t1.id && again.delivery == 2)
        _ = try p.put("q", "t2")
        _ = try p.put("q", "t3")
        // The worker goes away holding it: it goes back to the front, before t2 and t3.
        w1.disconnect()
        Thread.sleep(forTimeInterval: 0.2)
        #expect(try p.stats().queues["q"]?.ready == 3)
        let w2 = try broker.client()
        #expect(try w2.call("SUB q") == .ok([]))
        let moved = try w2.message()
        #expect(moved.id == t1.id && moved.delivery == 3)
        #expect(try w2.call("ACK \(moved.id)") == .ok([]))
        #expect(try w2.message().payload == "t2")
    }

    @Test func aRequeuedTaskGoesOutBeforeTheTasksBehindIt() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        for i in 1...3 { _ = try p.put("q", "t\(i)") }
        let w = try broker.client()
        #expect(try w.call("SUB q") == .ok([]))
        var seen: [String] = []
        for _ in 1...4 {
            let m = try w.message()
            seen.append("\(m.payload)#\(m.delivery)")
            // t1 and t2 are requeued once each; the worker is free at once, and must get
            // the task it returned (now at the front), not the one behind it.
            // (t2 with a delay of 0, which is none.)
            let requeue = m.payload == "t1" ? "REQUEUE \(m.id)" : "REQUEUE \(m.id) 0"
            #expect(try w.call(m.delivery == 1 && m.payload != "t3" ? requeue : "ACK \(m.id)") == .ok([]))
        }
        #expect(seen == ["t1#1", "t1#2", "t2#1", "t2#2"])
    }

    @Test func aLostWorkersTaskGoesOutBeforeTheTasksBehindIt() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        // 2,000 failures of another queue, for a REPLAY that keeps the writer busy.
        let failures = 2000
        let f = try broker.client()
        #expect(try f.call("SUB other") == .ok([]))
        p.send(String(repeating: "PUT other 1\r\nx\r\n", count: failures))
        for _ in 0..<failures {
            let m = try f.message()
            f.send("NACK \(m.id) 4\r\nboom\r\n")
        }
        for _ in 0..<failures { #expect(try p.frame().isOK && f.frame().isOK) }
        f.disconnect()

        for i in 1...4 { _ = try p.put("q", "t\(i)") }
        let w1 = try broker.client()
        #expect(try w1.call("SUB q") == .ok([]))
        #expect(try w1.message().payload == "t1")
        let w2 = try broker.client()
        #expect(try w2.call("SUB q") == .ok([]))
        let m2 = try w2.message()
        // While the writer replays them in one transaction (about 50 ms here), w1 goes away
        // holding t1, and once the broker has seen that, w2 finishes t2. Its next task must
        // be t1, on its way back to the front, not t3 behind it. (Before the fix it got t3
        // in 3 runs of 3: t1 was not back before the replay was committed.)
        let operatorClient = try broker.client()
        operatorClient.send("REPLAY 11\r\nqueue:other\r\n")
        Thread.sleep(forTimeInterval: 0.005)
        w1.disconnect()
        while try p.stats().queues["q"]?.workers != 1 { Thread.sleep(forTimeInterval: 0.0005) }
        #expect(try w2.call("ACK \(m2.id)") == .ok([]))
        let next = try w2.message(timeout: 5)
        #expect("\(next.payload)#\(next.delivery)" == "t1#2")
        #expect(try operatorClient.frame(timeout: 30) == .ok([String(failures)]))
    }

    @Test func aLostWorkersTaskGoesToAnIdleWorkerAtOnce() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        let w1 = try broker.client()
        let w2 = try broker.client()
        #expect(try w1.call("SUB q") == .ok([]))
        _ = try p.put("q", "t1")
        let m = try w1.message()
        #expect(try w2.call("SUB q") == .ok([]))
        #expect(try !w2.hasMessage(within: 0.2))
        w1.disconnect()
        let moved = try w2.message(timeout: 5)
        #expect(moved.id == m.id && moved.delivery == 2)
    }

    @Test func delayedRequeueComesBackOnlyAfterTheDelay() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        let w = try broker.client()
        _ = try p.put("q", "later")
        #expect(try w.call("SUB q") == .ok([]))
        let m = try w.message()
        let start = Date()
        #expect(try w.call("REQUEUE \(m.id) 800") == .ok([]))
        #expect(try p.stats().queues["q"]?.delayed == 1)
        #expect(try !w.hasMessage(within: 0.5))
        let back = try w.message(timeout: 5)
        #expect(back.id == m.id && back.delivery == 2)
        #expect(Date().timeIntervalSince(start) >= 0.8)
    }

    @Test func theAckTimeoutReturnsTheTaskAndClosesTheStuckWorker() throws {
        let broker = try BrokerProcess(arguments: ["--ack-timeout", "1"])
        let p = try broker.client()
        let stuck = try broker.client()
        _ = try p.put("q", "slow")
        #expect(try stuck.call("SUB q") == .ok([]))
        let m = try stuck.message()
        let other = try broker.client()
        #expect(try other.call("SUB q") == .ok([]))
        // TOUCH keeps it alive past one timeout period.
        Thread.sleep(forTimeInterval: 0.6)
        #expect(try stuck.call("TOUCH \(m.id)") == .ok([]))
        Thread.sleep(forTimeInterval: 0.6)
        #expect(try !other.hasMessage(within: 0.1))
        let f = try stuck.frame(timeout: 3)
        guard case let .error(code, message) = f else { Issue.record("expected ERR TIMEOUT, got \(f)"); return }
        #expect(code == "TIMEOUT" && message.hasPrefix("\(m.id)"))
        #expect(try stuck.waitForClose())
        let moved = try other.message()
        #expect(moved.id == m.id && moved.delivery == 2)
    }

    @Test func eachDeliveryGetsAWholeAckTimeoutOfItsOwn() throws {
        // The broker keeps one timer per worker and moves its deadline: the timer armed
        // for the first task must not cut the second one short.
        let broker = try BrokerProcess(arguments: ["--ack-timeout", "1"])
        let p = try broker.client()
        let w = try broker.client()
        let first = try p.put("q", "a")
        let second = try p.put("q", "b")
        #expect(try w.call("SUB q") == .ok([]))
        #expect(try w.message().id == first)
        Thread.sleep(forTimeInterval: 0.7)
        #expect(try w.call("ACK \(first)") == .ok([]))
        #expect(try w.message().id == second)
        // Past the first task's deadline, well within the second's.
        Thread.sleep(forTimeInterval: 0.6)
        #expect(try w.call("ACK \(second)") == .ok([]))
        // And the second's own deadline still holds: a third task held too long times out.
        let third = try p.put("q", "c")
        #expect(try w.message().id == third)
        let f = try w.frame(timeout: 3)
        guard case let .error(code, _) = f else { Issue.record("expected ERR TIMEOUT, got \(f)"); return }
        #expect(code == "TIMEOUT")
    }

    @Test func theDeliveryLimitMovesATaskToTheFailedStore() throws {
        let broker = try BrokerProcess(arguments: ["--max-deliveries", "2"])
        let p = try broker.client()
        let w = try broker.client()
        let id = try p.put("q", "poison")
        #expect(try w.call("SUB q") == .ok([]))
        #expect(try w.message().delivery == 1)
        #expect(try w.call("REQUEUE \(id)") == .ok([]))
        #expect(try w.message().delivery == 2)
        #expect(try w.call("REQUEUE \(id)") == .ok([]))
        #expect(try !w.hasMessage(within: 0.4))
        let f = try p.failed()
        #expect(f.total == 1)
        #expect(f.tasks.first?.error == "delivery limit exceeded (2 deliveries)")
        #expect(f.tasks.first?.deliveries == 2)
    }

    @Test func replayWakesIdleWorkersAndCountsReplays() throws {
        let broker = try BrokerProcess()
        let p = try broker.client()
        let w = try broker.client()
        let id = try p.put("q", "x")
        #expect(try w.call("SUB q") == .ok([]))
        _ = try w.message()
        #expect(try w.call("NACK \(id) 9\r\nnightmare") == .ok([]))
        #expect(try p.call("REPLAY 9\r\nnightmare") == .ok(["1"]))
        let again = try w.message()
        #expect(again.id == id && again.delivery == 1)
        #expect(try w.call("NACK \(id) 9\r\nnightmare") == .ok([]))
        #expect(try p.failed("nightmare").tasks.first?.replays == 1)
    }
}
