import Foundation
import TortoiseStorage

/// This test process's folder under `tortoise-tests` in the system's temporary folder.
/// The folders of earlier test processes that have ended are removed first, so that
/// runs do not pile up data directories (each holds a few MiB of preallocated files).
let testBase: String = {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("tortoise-tests").path
    try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
        guard let pid = Int32(name), pid != getpid() else { continue }
        if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(atPath: root + "/" + name) }
    }
    let mine = root + "/" + String(getpid())
    try? FileManager.default.createDirectory(atPath: mine, withIntermediateDirectories: true)
    return mine
}()

/// A fresh data directory (not created yet) in ``testBase``.
func freshDirectory(_ name: String = #function) -> String {
    testBase + "/\(name.filter { $0.isLetter || $0.isNumber })-\(UUID().uuidString.prefix(8))"
}

func openStore(_ dir: String, maxDeliveries: Int = 10, initialMapSize: Int = 1 << 20, maxMapSize: Int = 1 << 30) throws -> TaskStore {
    var c = TaskStore.Configuration(directory: dir)
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
