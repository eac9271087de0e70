import NIOConcurrencyHelpers
import NIOCore
import TortoiseProtocol

/// A task handed to a worker.
public struct TortoiseTask: Sendable {
    /// The task's id.
    public var id: UInt64
    /// The queue it came from.
    public var queue: String
    /// 1 on the first delivery, 2 on the second, ...
    public var delivery: Int
    /// The task's bytes.
    public var payload: [UInt8]
    /// The payload as UTF-8 text.
    public var text: String { String(decoding: payload, as: UTF8.self) }
}

/// Throw this from a handler for a minor glitch: the task goes back to the front of its
/// queue (after `delay`, if given) instead of to the failed store.
public struct TortoiseRequeue: Error, Sendable {
    /// How long the task waits before it is ready again.
    public var delay: Duration?
    /// Requeue now, or after `delay`.
    public init(after delay: Duration? = nil) { self.delay = delay }
}

/// Retries with exponential backoff and jitter: a failing task is requeued with a delay
/// until it has been delivered `maxAttempts` times, then NACKed to the failed store.
/// (The broker's `--max-deliveries`, 10 by default, must be above `maxAttempts`.)
public struct RetryPolicy: Sendable {
    /// Deliveries before giving up.
    public var maxAttempts: Int
    /// The first delay.
    public var baseDelay: Duration
    /// The longest delay.
    public var maxDelay: Duration
    /// Makes a policy.
    public init(maxAttempts: Int = 5, baseDelay: Duration = .milliseconds(500), maxDelay: Duration = .seconds(60)) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// The delay before attempt `delivery + 1`: base × 2^(delivery − 1), capped, with
    /// "full jitter" (a random share from half to all of it).
    public func delay(afterDelivery delivery: Int) -> Duration {
        let exp = min(max(delivery - 1, 0), 30)
        let ms = min(Double(baseDelay.milliseconds) * Double(1 << exp), Double(maxDelay.milliseconds))
        return .milliseconds(Int64(ms * Double.random(in: 0.5...1.0)))
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

/// What a worker did, for logs and for counting acknowledgements.
public enum WorkerEvent: Sendable, Equatable {
    /// Connected and subscribed.
    case connected
    /// The connection dropped (with why); the worker reconnects.
    case disconnected(String)
    /// The broker confirmed the `ACK` of the task.
    case acknowledged(UInt64)
    /// The broker confirmed the `NACK`: the task is in the failed store with this error.
    case failed(UInt64, error: String)
    /// The broker confirmed the `REQUEUE`.
    case requeued(UInt64)
    /// The broker took the task back: the handler ran past the ack timeout.
    case timedOut(UInt64)
}

/// Runs a handler for each task of one or more queues, one task at a time.
///
/// The handler returning means `ACK`; throwing means `NACK` with the error's description
/// as the error text (or, with a ``RetryPolicy``, a delayed `REQUEUE` until the attempts
/// are spent); throwing ``TortoiseRequeue`` requeues. While the handler runs, the worker
/// sends `TOUCH` so that the broker's ack timeout does not take the task back. When the
/// broker restarts or the connection drops, the worker reconnects with backoff and goes
/// on; a task whose `ACK` was not confirmed is never reported as acknowledged.
///
/// ```swift
/// let worker = TortoiseWorker(queues: ["emails"]) { task in
///     try await send(email: task.text)
/// }
/// try await worker.run()   // until worker.stop() or cancellation
/// ```
public final class TortoiseWorker: Sendable {
    /// How the worker behaves.
    public struct Options: Sendable {
        /// How often to `TOUCH` a task while its handler runs (nil: never).
        public var touchInterval: Duration? = .seconds(60)
        /// Retry failing tasks with backoff before they go to the failed store.
        public var retry: RetryPolicy?
        /// The first wait before reconnecting; it doubles up to ``maxReconnectDelay``.
        public var reconnectDelay: Duration = .milliseconds(100)
        /// The longest wait before reconnecting.
        public var maxReconnectDelay: Duration = .seconds(5)
        /// Called for each event (from the worker's task).
        public var onEvent: (@Sendable (WorkerEvent) -> Void)?
        /// The defaults.
        public init() {}
    }

    /// Where the worker connects.
    public let configuration: TortoiseClientConfiguration
    /// The queues it works on.
    public let queues: [String]
    private let options: Options
    private let handler: @Sendable (TortoiseTask) async throws -> Void
    private let state = NIOLockedValueBox(State())

    private struct State {
        var stopping = false
        var busy = false
        var connection: Connection?
    }

    /// A worker for `queues`; nothing happens until ``run()``.
    public init(
        configuration: TortoiseClientConfiguration = TortoiseClientConfiguration(),
        queues: [String],
        options: Options = Options(),
        handler: @escaping @Sendable (TortoiseTask) async throws -> Void
    ) {
        self.configuration = configuration
        self.queues = queues
        self.options = options
        self.handler = handler
    }

    /// Asks the worker to stop: it finishes the task in hand, then closes. ``run()`` returns.
    public func stop() {
        let idleConnection: Connection? = state.withLockedValue { s in
            s.stopping = true
            return s.busy ? nil : s.connection
        }
        idleConnection?.close()
    }

    private var stopping: Bool { state.withLockedValue { $0.stopping } }

    /// Works until ``stop()`` is called or the task is cancelled. Throws only for what
    /// reconnecting cannot fix: a bad queue name or a refused token.
    public func run() async throws(TortoiseClientError) {
        for q in queues where !Wire.isValidName(q) {
            throw TortoiseClientError(.badArgument, "queue name '\(q)' is not 1 to \(Wire.maxNameLength) of A-Z a-z 0-9 . _ - :")
        }
        var delay = options.reconnectDelay
        while !stopping && !Task.isCancelled {
            do throws(TortoiseClientError) {
                try await session()
                delay = options.reconnectDelay
            } catch {
                if error.isAuthenticationError || error.code == .badArgument { throw error }
                options.onEvent?(.disconnected(error.description))
            }
            if stopping || Task.isCancelled { break }
            let jittered = Duration.milliseconds(Int64(Double(delay.milliseconds) * Double.random(in: 0.5...1.0)))
            try? await Task.sleep(for: jittered)
            delay = min(delay * 2, options.maxReconnectDelay)
        }
    }

    /// One connection's life: subscribe, then handle tasks until it ends.
    private func session() async throws(TortoiseClientError) {
        let (pushes, pushContinuation) = AsyncStream<ServerFrame>.makeStream()
        let onEvent = options.onEvent
        let connection = try await Connection.open(
            configuration,
            onPush: { frame in
                // The broker took the task back (ack timeout) and is closing: said at
                // once, as the handler may still run, and the connection is gone by the
                // time it returns.
                if case let .error(code, message) = frame, code == ErrorCode.timeout.rawValue {
                    if let id = message.split(separator: " ").first.flatMap({ UInt64($0) }) { onEvent?(.timedOut(id)) }
                    return
                }
                pushContinuation.yield(frame)
            },
            onClose: { pushContinuation.finish() }
        )
        let proceed = state.withLockedValue { s -> Bool in
            s.connection = connection
            return !s.stopping
        }
        defer {
            state.withLockedValue { $0.connection = nil }
            connection.close()
        }
        guard proceed else { return }
        for q in queues { _ = try await connection.ok(.sub(q)) }
        options.onEvent?(.connected)
        for await frame in pushes {
            switch frame {
            case let .message(id, queue, delivery, payload):
                state.withLockedValue { $0.busy = true }
                let task = TortoiseTask(id: id, queue: queue, delivery: delivery, payload: Array(payload.readableBytesView))
                do throws(TortoiseClientError) {
                    try await work(task, connection)
                } catch {
                    state.withLockedValue { $0.busy = false }
                    throw error
                }
                let stop = state.withLockedValue { s -> Bool in
                    s.busy = false
                    return s.stopping
                }
                if stop { return }
            default:
                break
            }
            if Task.isCancelled { return }
        }
        if !stopping {
            throw TortoiseClientError(.connectionLost, "the connection to the broker closed")
        }
    }

    private func work(_ task: TortoiseTask, _ connection: Connection) async throws(TortoiseClientError) {
        // From the connection's event loop, not a Swift task: a handler that blocks its
        // thread (or all of a narrow pool's) must not stop the touches meant for it.
        let toucher = options.touchInterval.map { connection.touch(task.id, every: $0) }
        let outcome: Command
        do {
            try await handler(task)
            outcome = .ack(task.id)
        } catch let requeue as TortoiseRequeue {
            outcome = .requeue(task.id, delayMillis: requeue.delay.map { UInt64(max(0, $0.milliseconds)) })
        } catch {
            if let retry = options.retry, task.delivery < retry.maxAttempts {
                outcome = .requeue(task.id, delayMillis: UInt64(max(0, retry.delay(afterDelivery: task.delivery).milliseconds)))
            } else {
                outcome = .nack(task.id, error: String(describing: error))
            }
        }
        toucher?.cancel()
        let reply = try await connection.send(outcome)
        guard case .ok = reply else {
            // NOT_FOUND: the broker took the task back (ack timeout); nothing to report.
            return
        }
        switch outcome {
        case .ack: options.onEvent?(.acknowledged(task.id))
        case .nack(_, let error): options.onEvent?(.failed(task.id, error: error))
        default: options.onEvent?(.requeued(task.id))
        }
    }
}
