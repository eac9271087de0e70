import Foundation
import Testing
import TortoiseStorage
import TortoiseTestSupport

/// This test process's folder under `tortoise-tests` in the system's temporary folder.
let testBase = testProcessDirectory("tortoise-tests")

/// A fresh data directory (not created yet) in ``testBase``.
func freshDirectory(_ name: String = #function) -> String {
    freshDirectory(in: testBase, for: name)
}

/// A new ``FaultyDisk`` in `folder` (default: a fresh one for the test `name`); nil, with a
/// recorded issue saying why, where there can be none (it needs root and loop devices).
func faultyDisk(in folder: String? = nil, megabytes: Int = 32, _ name: String = #function) -> FaultyDisk? {
    do {
        return try FaultyDisk(in: folder ?? freshDirectory(name), megabytes: megabytes)
    } catch {
        Issue.record("no loop-device disk here (not root?), the test did not run: \(error)")
        return nil
    }
}

/// A store configuration for tests: a 1 MiB map that may grow to 1 GiB; with
/// `backgroundCheckpoints` false, LMDB's file is flushed only by `flushData()` and at
/// close (a power cut then finds the latest changes only in the log).
func testConfiguration(_ dir: String, backgroundCheckpoints: Bool = true, logFileSize: Int? = nil) -> TaskStore.Configuration {
    var c = TaskStore.Configuration(directory: dir)
    c.initialMapSize = 1 << 20
    c.maxMapSize = 1 << 30
    c.flushesDataInBackground = backgroundCheckpoints
    if let logFileSize { c.logFileSize = logFileSize }
    return c
}

func openStore(_ dir: String, maxDeliveries: Int = 10, initialMapSize: Int = 1 << 20, maxMapSize: Int = 1 << 30) throws -> TaskStore {
    var c = testConfiguration(dir)
    c.maxDeliveries = maxDeliveries
    c.initialMapSize = initialMapSize
    c.maxMapSize = maxMapSize
    return try TaskStore(c)
}

extension TaskStore {
    func put(_ queue: String, _ payload: String) async throws -> TaskID {
        guard case .put(let id) = try await perform(.put(queue: queue, payload: Array(payload.utf8))) else { fatalError() }
        return id
    }

    func take(_ queue: String) async throws -> DeliveredTask? {
        guard case .taken(let t) = try await perform(.take(queue: queue)) else { fatalError() }
        return t
    }

    func takeText(_ queue: String) async throws -> String? {
        try await take(queue).map { String(decoding: $0.payload, as: UTF8.self) }
    }
}

extension TaskStore {
    /// Submits `ops` all at once (so that they share batches) and waits for every outcome.
    func performAll(_ ops: [StoreOperation]) async -> [Result<StoreOutcome, StorageError>] {
        final class Outcomes: @unchecked Sendable {
            let lock = NSLock()
            var results: [Result<StoreOutcome, StorageError>?]
            var left: Int
            init(_ n: Int) { results = Array(repeating: nil, count: n); left = n }
        }
        guard !ops.isEmpty else { return [] }
        return await withCheckedContinuation { cont in
            let outcomes = Outcomes(ops.count)
            for (i, op) in ops.enumerated() {
                submit(op) { r in
                    let done: [Result<StoreOutcome, StorageError>]? = outcomes.lock.withLock {
                        outcomes.results[i] = r
                        outcomes.left -= 1
                        return outcomes.left == 0 ? outcomes.results.map { $0! } : nil
                    }
                    if let done { cont.resume(returning: done) }
                }
            }
        }
    }
}

/// Reads the lines a child writes to a pipe, without blocking.
final class LineReader {
    private let fd: Int32
    private var partial: [UInt8] = []
    private(set) var lines: [String] = []

    init(_ fd: Int32) {
        self.fd = fd
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    /// Takes in what the pipe holds now; a line counts once its newline came.
    func drain() {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            partial += chunk[0..<n]
            var start = 0
            while let nl = partial[start...].firstIndex(of: 10) {
                lines.append(String(decoding: partial[start..<nl], as: UTF8.self))
                start = nl + 1
            }
            partial.removeFirst(start)
        }
    }
}
