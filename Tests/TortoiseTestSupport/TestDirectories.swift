import Foundation

/// This test process's own folder under `root` in the system's temporary folder,
/// created on first use. The folders of test processes that have ended are removed
/// first, so runs do not pile up data directories (each holds a few MiB of
/// preallocated files), and so are the disks a ``FaultyDisk`` mounted there if its
/// process was killed before it could take them down (they would hold loop devices
/// until none were left).
public func testProcessDirectory(_ root: String) -> String {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent(root).path
    try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
        guard let pid = Int32(name), pid != getpid() else { continue }
        if kill(pid, 0) != 0 && errno == ESRCH {
            FaultyDisk.takeDownEverything(under: root + "/" + name)
            try? FileManager.default.removeItem(atPath: root + "/" + name)
        }
    }
    let mine = root + "/" + String(getpid())
    try? FileManager.default.createDirectory(atPath: mine, withIntermediateDirectories: true)
    return mine
}

/// A fresh path (not created yet) in `base`, named after the test.
public func freshDirectory(in base: String, for name: String) -> String {
    base + "/\(name.filter { $0.isLetter || $0.isNumber })-\(UUID().uuidString.prefix(8))"
}
