import Foundation
import Testing
import TortoiseTestSupport

/// What a killed test process left behind is taken down by the next test process.
@Suite struct LeftoverCleanupTests {
    @Test func theProcessesAKilledTestProcessStartedAreStoppedByTheNextOne() throws {
        let root = "tortoise-cleanup-\(UUID().uuidString.prefix(8))"
        let base = FileManager.default.temporaryDirectory.appendingPathComponent(root).path
        defer { try? FileManager.default.removeItem(atPath: base) }
        // No process has this id: the folder is a dead test process's.
        let dead = base + "/2147483000"
        try FileManager.default.createDirectory(atPath: dead + "/data", withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: dead + "/data/log"))
        // Something that runs until stopped and names a path in the folder, as a broker
        // started with `--data` there does.
        let orphan = try ChildProcess("/usr/bin/tail", ["-f", dead + "/data/log"], environment: [:])
        let bystander = try ChildProcess("/usr/bin/tail", ["-f", "/dev/null"], environment: [:])
        defer { bystander.signal(SIGKILL); bystander.wait(); orphan.signal(SIGKILL); orphan.wait() }
        #expect(orphan.isRunning)
        // Until it has exec'd, its command line is still this process's (under load that
        // takes a while, and the cleanup would find nothing to stop).
        let started = Date().addingTimeInterval(10)
        while Date() < started,
              !(FileManager.default.contents(atPath: "/proc/\(orphan.pid)/cmdline").map { String(decoding: $0, as: UTF8.self).contains(dead) } ?? false) {
            usleep(1000)
        }

        _ = testProcessDirectory(root)
        #expect(orphan.wait(timeout: 5), "the process naming the dead folder still runs")
        #expect(bystander.isRunning, "a process naming nothing in the folder was stopped")
        #expect(!FileManager.default.fileExists(atPath: dead))
    }

    /// Lines of /proc/mounts and of `losetup -a` that name `folder`.
    private func mounted(under folder: String) -> [String] {
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        return mounts.split(separator: "\n").map(String.init).filter { $0.contains(folder + "/") }
    }

    private func loopDevices() throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/sbin/losetup")
        p.arguments = ["-a"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test func theDisksOfAKilledTestProcessAreTakenDownByTheNextOne() throws {
        let root = "tortoise-cleanup-\(UUID().uuidString.prefix(8))"
        let base = FileManager.default.temporaryDirectory.appendingPathComponent(root).path
        defer { try? FileManager.default.removeItem(atPath: base) }
        // No process has this id: the folder is a dead test process's.
        let dead = base + "/2147483000"
        guard let disk = faultyDisk(in: dead + "/disk") else { return }
        _ = try disk.powerCut()
        let devices = try loopDevices().split(separator: "\n").filter { $0.contains(dead + "/") }.map { String($0.prefix { $0 != ":" }) }
        #expect(mounted(under: dead).count == 3, "the tmpfs, the disk and its copy")
        #expect(devices.count == 2, "the disk's loop device and its copy's")
        disk.abandon()

        _ = testProcessDirectory(root)
        #expect(mounted(under: dead).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dead))
        // A loop device in use is detached once its file system is gone: soon after.
        let deadline = Date().addingTimeInterval(5)
        var left = devices
        while !left.isEmpty && Date() < deadline {
            let now = try loopDevices()
            left = devices.filter { now.contains($0 + ":") }
            if !left.isEmpty { usleep(50_000) }
        }
        #expect(left.isEmpty, "loop devices still attached: \(left)")
    }
}
