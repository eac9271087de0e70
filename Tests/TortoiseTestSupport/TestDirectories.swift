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
            killProcesses(naming: root + "/" + name)
            FaultyDisk.takeDownEverything(under: root + "/" + name)
            try? FileManager.default.removeItem(atPath: root + "/" + name)
        }
    }
    let mine = root + "/" + String(getpid())
    try? FileManager.default.createDirectory(atPath: mine, withIntermediateDirectories: true)
    return mine
}

/// Kills (SIGKILL) every process whose command line names a path in `folder`: the
/// brokers a test process that was killed had started with their data there, which
/// outlive it.
func killProcesses(naming folder: String) {
    let prefix = folder.hasSuffix("/") ? folder : folder + "/"
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(entry), pid != getpid(),
              let cmdline = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
        let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        if arguments.contains(where: { $0.hasPrefix(prefix) || $0.contains("=" + prefix) }) { kill(pid, SIGKILL) }
    }
}

/// A fresh path (not created yet) in `base`, named after the test.
public func freshDirectory(in base: String, for name: String) -> String {
    base + "/\(name.filter { $0.isLetter || $0.isNumber })-\(UUID().uuidString.prefix(8))"
}
