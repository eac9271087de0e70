import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import TortoiseStorage

/// Durable put-then-ack throughput of the task store with 1, 8 and 64 concurrent
/// callers, beside the machine's raw fsync rate measured in the same run.
struct StorageBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Group commit: durable operations per second against the raw fdatasync rate."
    )

    @Option(help: "Seconds per measurement.")
    var seconds = 3.0

    @Option(help: "Where to put the data (a directory on the disk to measure).")
    var directory = FileManager.default.temporaryDirectory.path

    @Option(parsing: .upToNextOption, help: "Concurrent callers to measure.")
    var callers: [Int] = [1, 8, 64]

    @Option(name: .customLong("checkpoint-ms"), help: "How often LMDB's file is checkpointed, in milliseconds (as the store's dataFlushInterval).")
    var checkpointInterval = 10

    @Option(help: "How the callers wait: 'tasks' (one Swift task each, awaiting each operation) or 'loop' (state machines on one event loop, as the broker drives the store: completions hop back to it, many per wake-up).")
    var driver: Driver = .tasks

    enum Driver: String, ExpressibleByArgument { case tasks, loop }

    @Option(help: "Before measuring, put this many tasks and ack them all (a backlog that came and went: a bigger file and free list).")
    var drainedBacklog = 0

    @Flag(help: "After the drained backlog, close the store and open it again (which compacts its file) before measuring.")
    var reopen = false

    func run() async throws {
        let base = directory + "/tortoise-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }

        let raw = rawFsyncRate(path: base + "/raw", seconds: seconds)
        print("raw write+fdatasync of 100 bytes: \(Int(raw)) /s")
        print("")
        print("callers driven by: \(driver == .tasks ? "one Swift task each" : "one event loop, as the broker does")")
        print("callers  durable ops/s  put+ack pairs/s  flushes/s  ops per flush  commits per pair  vs raw fsync  vs 1 caller")
        var oneCaller: Double?
        for n in callers {
            let dir = base + "/store-\(n)"
            var cfg = TaskStore.Configuration(directory: dir)
            cfg.dataFlushInterval = .milliseconds(checkpointInterval)
            var store = try TaskStore(cfg)
            if drainedBacklog > 0 { try await drain(store: store, backlog: drainedBacklog) }
            if reopen {
                store.close()
                store = try TaskStore(TaskStore.Configuration(directory: dir))
                if let c = store.compactedAtOpen { print("compacted at open: \(c.before >> 20) MiB -> \(c.after >> 20) MiB") }
            }
            let syncsBefore = store.syncCount
            let batchesBefore = store.batchNumber
            let (pairs, elapsed) = switch driver {
            case .tasks: try await measure(store: store, callers: n)
            case .loop: try await LoopCallers.measure(store: store, callers: n, seconds: seconds)
            }
            let flushes = Double(store.syncCount - syncsBefore) / elapsed
            let commits = Double(store.batchNumber - batchesBefore)
            store.close()
            let ops = Double(pairs * 2) / elapsed
            if oneCaller == nil { oneCaller = ops }
            let line = [
                pad(String(n), 7),
                pad(String(Int(ops)), 14),
                pad(String(Int(Double(pairs) / elapsed)), 16),
                pad(String(Int(flushes)), 10),
                pad(String(format: "%.1f", ops / max(flushes, 1)), 14),
                pad(String(format: "%.2f", commits / Double(max(pairs, 1))), 17),
                pad(String(format: "%.2f×", ops / raw), 13),
                pad(String(format: "%.1f×", ops / oneCaller!), 12),
            ]
            print(line.joined(separator: " "))
        }
    }

    /// Puts `backlog` tasks (64 callers) and then acks them all.
    func drain(store: TaskStore, backlog: Int) async throws {
        let payload = [UInt8](repeating: 42, count: 100)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<64 {
                group.addTask {
                    for _ in stride(from: c, to: backlog, by: 64) { _ = try await store.perform(.put(queue: "backlog", payload: payload)) }
                }
            }
            try await group.waitForAll()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    while case .taken(let t?) = try await store.perform(.take(queue: "backlog")) {
                        _ = try await store.perform(.ack(t.id))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    func rawFsyncRate(path: String, seconds: Double) -> Double {
        let fd = open(path, O_RDWR | O_CREAT, 0o644)
        defer { close(fd); unlink(path) }
        let block = [UInt8](repeating: 7, count: 100)
        var n = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            _ = block.withUnsafeBytes { pwrite(fd, $0.baseAddress, 100, off_t((n % 64) * 4096)) }
            fdatasync(fd)
            n += 1
        }
        return Double(n) / Date().timeIntervalSince(start)
    }

    func measure(store: TaskStore, callers: Int) async throws -> (Int, Double) {
        let start = Date()
        let deadline = start.addingTimeInterval(seconds)
        let payload = [UInt8](repeating: 42, count: 100)
        let pairs = try await withThrowingTaskGroup(of: Int.self) { group in
            for c in 0..<callers {
                group.addTask {
                    var done = 0
                    let queue = "bench-\(c)"
                    while Date() < deadline {
                        _ = try await store.perform(.put(queue: queue, payload: payload))
                        // Taken as the broker takes a task for delivery: read at once, the
                        // claim queued behind it without waiting (it is not durable).
                        guard let t = try store.peekReady(queue, skipping: []) else { continue }
                        store.submit(.claim(t.id)) { _ in }
                        _ = try await store.perform(.ack(t.id))
                        done += 1
                    }
                    return done
                }
            }
            return try await group.reduce(0, +)
        }
        return (pairs, Date().timeIntervalSince(start))
    }
}

/// Callers driven as the broker drives the store: each a state machine on one event loop;
/// the store's completions hop back to the loop in batches (one wake-up for every
/// completion that came meanwhile), as `Broker.completed` does.
final class LoopCallers: @unchecked Sendable {
    private let loop: EventLoop
    private let store: TaskStore
    private let callers: Int
    private let deadline: Date
    private let payload = [UInt8](repeating: 42, count: 100)
    private let finished: EventLoopPromise<Int>
    // On the loop.
    private var pairs = 0
    private var stopped = 0
    private let hops = NIOLockedValueBox<(work: [@Sendable () -> Void], scheduled: Bool)>(([], false))

    private init(loop: EventLoop, store: TaskStore, callers: Int, seconds: Double) {
        self.loop = loop
        self.store = store
        self.callers = callers
        deadline = Date().addingTimeInterval(seconds)
        finished = loop.makePromise()
    }

    static func measure(store: TaskStore, callers: Int, seconds: Double) async throws -> (Int, Double) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let driver = LoopCallers(loop: group.next(), store: store, callers: callers, seconds: seconds)
        let start = Date()
        driver.loop.execute { for c in 0..<callers { driver.put("bench-\(c)") } }
        let pairs = try await driver.finished.futureResult.get()
        let elapsed = Date().timeIntervalSince(start)
        try await group.shutdownGracefully()
        return (pairs, elapsed)
    }

    private func hop(_ work: @escaping @Sendable () -> Void) {
        let schedule = hops.withLockedValue { state -> Bool in
            state.work.append(work)
            if state.scheduled { return false }
            state.scheduled = true
            return true
        }
        if schedule {
            loop.execute { [self] in
                let batch = hops.withLockedValue { state -> [@Sendable () -> Void] in
                    defer { state.work = []; state.scheduled = false }
                    return state.work
                }
                for work in batch { work() }
            }
        }
    }

    private func put(_ queue: String) {
        store.submit(.put(queue: queue, payload: payload)) { [self] result in
            hop { [self] in
                guard case .success = result, let t = try? store.peekReady(queue, skipping: []) else { return next(queue) }
                // Taken as the broker takes a task for delivery: the claim queued without
                // waiting (it is not durable), then the durable ack.
                store.submit(.claim(t.id)) { _ in }
                store.submit(.ack(t.id)) { [self] result in
                    hop { [self] in
                        if case .success = result { pairs += 1 }
                        next(queue)
                    }
                }
            }
        }
    }

    private func next(_ queue: String) {
        if Date() < deadline { return put(queue) }
        stopped += 1
        if stopped == callers { finished.succeed(pairs) }
    }
}
