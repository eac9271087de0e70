import Foundation
import NIOConcurrencyHelpers
import Testing
import TortoiseClient
import TortoiseProtocol

/// Collects a worker's events for assertions.
final class EventLog: Sendable {
    private let events = NIOLockedValueBox<[WorkerEvent]>([])
    func record(_ e: WorkerEvent) { events.withLockedValue { $0.append(e) } }
    var all: [WorkerEvent] { events.withLockedValue { $0 } }
    var acknowledged: [UInt64] { all.compactMap { if case .acknowledged(let id) = $0 { return id } else { return nil } } }
    func wait(until predicate: ([WorkerEvent]) -> Bool, timeout: Double = 15) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if predicate(all) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return predicate(all)
    }
}

/// The bundled client library against a real broker.
@Suite(.serialized) struct ClientTests {
    @Test func concurrentPutsShareOneConnectionAndAllLand() async throws {
        let broker = try BrokerProcess()
        let client = try await TortoiseClient.connect(broker.clientConfiguration)
        let ids = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for i in 0..<300 { group.addTask { try await client.put("bulk", "task \(i)") } }
            return try await group.reduce(into: [UInt64]()) { $0.append($1) }
        }
        #expect(Set(ids).count == 300)
        #expect(try await client.stats().queues["bulk"]?.ready == 300)
        #expect(try await client.stats().connections == 1)
        await client.close()
        await #expect(throws: TortoiseClientError.self) { try await client.ping() }
    }

    @Test func urlAndEnvironmentConfiguration() throws {
        let c = try TortoiseClientConfiguration(url: "tortoise://:s3cret@example.org:9999")
        #expect(c.host == "example.org" && c.port == 9999 && c.token == "s3cret")
        let e = TortoiseClientConfiguration(environment: ["TORTOISE_HOST": "h", "TORTOISE_PORT": "1234", "TORTOISE_TOKEN": "t"])
        #expect(e.host == "h" && e.port == 1234 && e.token == "t")
        let d = TortoiseClientConfiguration(environment: [:])
        #expect(d.host == "127.0.0.1" && d.port == 7654 && d.token == nil)
        #expect(throws: TortoiseClientError.self) { try TortoiseClientConfiguration(url: "http://x") }
    }

    @Test func aBadTokenIsAClearError() async throws {
        let broker = try BrokerProcess(environment: ["TORTOISE_TOKEN": "right"])
        var config = broker.clientConfiguration
        config.token = "wrong"
        do {
            _ = try await TortoiseClient.connect(config)
            Issue.record("connected with a wrong token")
        } catch {
            #expect(error.isAuthenticationError && error.code == .server("DENIED"))
        }
        let worker = TortoiseWorker(configuration: config, queues: ["q"]) { _ in }
        await #expect(throws: TortoiseClientError.self) { try await worker.run() }
        config.token = "right"
        let ok = try await TortoiseClient.connect(config)
        #expect(try await ok.put("q", "x") == 1)
    }

    @Test func aFullBrokerSaysSoToEveryNewClient() async throws {
        let broker = try BrokerProcess(arguments: ["--max-connections", "1"])
        let holder = try broker.client()
        #expect(try holder.call("PING") == .ok(["PONG"]))
        // The broker's ERR comes before, with or after the client's first command; the
        // client reports it every time, not a lost connection.
        for _ in 0..<20 {
            do {
                let c = try await TortoiseClient.connect(broker.clientConfiguration)
                _ = try await c.stats()
                Issue.record("a connection past --max-connections was served")
            } catch {
                #expect(error.code == .server("INTERNAL") && error.message.contains("too many connections"), "\(error)")
            }
        }
        holder.disconnect()
        var served = false
        for _ in 0..<50 where !served {
            if let c = try? await TortoiseClient.connect(broker.clientConfiguration), (try? await c.ping()) != nil {
                served = true
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(served, "the slot of the closed connection was not freed")
    }

    @Test func workerAcksNacksAndRequeues() async throws {
        let broker = try BrokerProcess()
        let client = try await TortoiseClient.connect(broker.clientConfiguration)
        let log = EventLog()
        var options = TortoiseWorker.Options()
        options.onEvent = { log.record($0) }
        let worker = TortoiseWorker(configuration: broker.clientConfiguration, queues: ["jobs", "other"], options: options) { task in
            switch task.text {
            case "fail": throw TestFailure("disk on fire")
            case "glitch" where task.delivery == 1: throw TortoiseRequeue(after: .milliseconds(300))
            default: return
            }
        }
        let run = Task { try await worker.run() }
        let ok = try await client.put("jobs", "fine")
        let bad = try await client.put("other", "fail")
        let glitch = try await client.put("jobs", "glitch")
        #expect(await log.wait { events in
            events.contains(.acknowledged(ok)) && events.contains(.acknowledged(glitch))
                && events.contains(.failed(bad, error: "disk on fire"))
        })
        #expect(log.all.contains(.requeued(glitch)))
        let failed = try await client.failed("fire")
        #expect(failed.total == 1 && failed.tasks.first?.id == bad && failed.tasks.first?.queue == "other")
        let stats = try await client.stats()
        #expect(stats.queues["jobs"]?.ready ?? 0 == 0 && stats.queues["jobs"]?.inflight ?? 0 == 0)
        worker.stop()
        try await run.value
    }

    @Test func theRetryHelperBacksOffThenFails() async throws {
        let broker = try BrokerProcess()
        let client = try await TortoiseClient.connect(broker.clientConfiguration)
        let log = EventLog()
        var options = TortoiseWorker.Options()
        options.retry = RetryPolicy(maxAttempts: 3, baseDelay: .milliseconds(100), maxDelay: .seconds(1))
        options.onEvent = { log.record($0) }
        let deliveries = NIOLockedValueBox<[Int]>([])
        let worker = TortoiseWorker(configuration: broker.clientConfiguration, queues: ["q"], options: options) { task in
            deliveries.withLockedValue { $0.append(task.delivery) }
            throw TestFailure("flaky upstream")
        }
        let run = Task { try await worker.run() }
        let id = try await client.put("q", "x")
        #expect(await log.wait { $0.contains(.failed(id, error: "flaky upstream")) })
        #expect(deliveries.withLockedValue { $0 } == [1, 2, 3])
        #expect(log.all.filter { $0 == .requeued(id) }.count == 2)
        #expect(try await client.failed().tasks.first?.deliveries == 3)
        // Backoff and jitter: delays grow and stay within bounds.
        let policy = RetryPolicy(maxAttempts: 10, baseDelay: .milliseconds(100), maxDelay: .seconds(1))
        for d in 1...6 {
            let ms = Double(policy.delay(afterDelivery: d).components.attoseconds) / 1e15 + Double(policy.delay(afterDelivery: d).components.seconds) * 1000
            let full = min(100.0 * pow(2, Double(d - 1)), 1000)
            #expect(ms >= full * 0.5 - 1 && ms <= full + 1, "delay after delivery \(d): \(ms) ms")
        }
        worker.stop()
        try await run.value
    }

    @Test func aWorkerSurvivesABrokerRestartAndEachTaskIsAckedOnce() async throws {
        let broker = try BrokerProcess()
        let client = try await TortoiseClient.connect(broker.clientConfiguration)
        let log = EventLog()
        var options = TortoiseWorker.Options()
        options.onEvent = { log.record($0) }
        options.reconnectDelay = .milliseconds(50)
        options.maxReconnectDelay = .milliseconds(300)
        let handled = NIOLockedValueBox<[String]>([])
        let worker = TortoiseWorker(configuration: broker.clientConfiguration, queues: ["q"], options: options) { task in
            handled.withLockedValue { $0.append(task.text) }
            if task.text == "slow" { try await Task.sleep(for: .milliseconds(800)) }
        }
        let run = Task { try await worker.run() }
        let a = try await client.put("q", "a")
        #expect(await log.wait { $0.contains(.acknowledged(a)) })
        let slow = try await client.put("q", "slow")
        #expect(await log.wait { _ in handled.withLockedValue { $0.contains("slow") } })
        // The broker dies while the handler runs: its ACK cannot be confirmed.
        broker.kill9()
        try broker.restart(samePort: true)
        #expect(await log.wait { $0.contains(.acknowledged(slow)) }, "the task came back and was done after the restart")
        let producer = try await TortoiseClient.connect(broker.clientConfiguration)
        let b = try await producer.put("q", "b")
        #expect(await log.wait { $0.contains(.acknowledged(b)) })
        #expect(log.acknowledged.sorted() == [a, slow, b].sorted(), "each task acknowledged exactly once")
        #expect(handled.withLockedValue { $0.filter { $0 == "slow" }.count } == 2, "delivered again after the restart")
        #expect(log.all.contains { if case .disconnected = $0 { return true } else { return false } })
        worker.stop()
        try await run.value
    }

    /// A handler well past the ack timeout, touched every 300 ms: one that sleeps, and one
    /// that blocks every thread of Swift's cooperative pool (a synchronous library call,
    /// CPU-bound work). The touches go out from the connection's event loop, so neither
    /// loses its task; the blocking one did, at every delivery, when a Swift task sent
    /// them. The sleeping one has 2.7 s of slack (with 1.7 s it once failed in nine
    /// full-suite runs, most likely that same starved toucher).
    @Test(arguments: [false, true]) func longHandlersAreTouchedPastTheAckTimeout(blockingThePool: Bool) async throws {
        let broker = try BrokerProcess(arguments: ["--ack-timeout", blockingThePool ? "2" : "3"])
        let client = try await TortoiseClient.connect(broker.clientConfiguration)
        let log = EventLog()
        var options = TortoiseWorker.Options()
        options.touchInterval = .milliseconds(300)
        options.onEvent = { log.record($0) }
        let width = ProcessInfo.processInfo.activeProcessorCount
        let worker = TortoiseWorker(configuration: broker.clientConfiguration, queues: ["slow"], options: options) { _ in
            if blockingThePool {
                await withTaskGroup(of: Void.self) { group in
                    for _ in 0..<width { group.addTask { usleep(4_000_000) } }
                }
            } else {
                try await Task.sleep(for: .milliseconds(6500))
            }
        }
        let run = Task { try await worker.run() }
        let id = try await client.put("slow", "x")
        #expect(await log.wait(until: { $0.contains(.acknowledged(id)) }, timeout: 30), "\(log.all)")
        #expect(!log.all.contains(.timedOut(id)), "\(log.all)")
        #expect(!log.all.contains { if case .disconnected = $0 { return true } else { return false } }, "\(log.all)")
        worker.stop()
        try await run.value
    }

    @Test func aHandlerPastTheAckTimeoutIsReportedAsTimedOut() async throws {
        // No touches: the broker takes the task back while the handler still runs, and
        // says so as it closes the connection. The worker reports that, reconnects, and
        // the task's second delivery is acked.
        let broker = try BrokerProcess(arguments: ["--ack-timeout", "1"])
        let client = try await TortoiseClient.connect(broker.clientConfiguration)
        let log = EventLog()
        var options = TortoiseWorker.Options()
        options.touchInterval = nil
        options.reconnectDelay = .milliseconds(50)
        options.onEvent = { log.record($0) }
        let worker = TortoiseWorker(configuration: broker.clientConfiguration, queues: ["stuck"], options: options) { task in
            if task.delivery == 1 { try await Task.sleep(for: .milliseconds(2500)) }
        }
        let run = Task { try await worker.run() }
        let id = try await client.put("stuck", "x")
        #expect(await log.wait(until: { $0.contains(.acknowledged(id)) }, timeout: 15), "\(log.all)")
        #expect(log.all.contains(.timedOut(id)), "\(log.all)")
        worker.stop()
        try await run.value
    }

    @Test func stopFinishesTheTaskInHandThenCloses() async throws {
        let broker = try BrokerProcess()
        let client = try await TortoiseClient.connect(broker.clientConfiguration)
        let log = EventLog()
        var options = TortoiseWorker.Options()
        options.onEvent = { log.record($0) }
        let started = NIOLockedValueBox(false)
        let worker = TortoiseWorker(configuration: broker.clientConfiguration, queues: ["q"], options: options) { _ in
            started.withLockedValue { $0 = true }
            try await Task.sleep(for: .milliseconds(500))
        }
        let run = Task { try await worker.run() }
        let first = try await client.put("q", "one")
        _ = try await client.put("q", "two")
        #expect(await log.wait { _ in started.withLockedValue { $0 } })
        worker.stop()
        try await run.value
        #expect(log.acknowledged == [first])
        // The broker may have pushed the next task before it saw the close: it returns it.
        var stats = try await client.stats()
        for _ in 0..<100 where stats.queues["q"]?.ready != 1 || stats.queues["q"]?.workers != 0 {
            try await Task.sleep(for: .milliseconds(20))
            stats = try await client.stats()
        }
        #expect(stats.queues["q"]?.ready == 1 && stats.queues["q"]?.inflight == 0 && stats.queues["q"]?.workers == 0)
    }
}
