import Foundation
import Testing
import TortoiseProtocol
import TortoiseTestSupport

/// The data directory on a small filesystem of its own (a tmpfs), filled while clients write.
@Suite(.serialized) struct DiskFullTests {
    /// A 24 MiB tmpfs mounted at a fresh directory, or nil (recorded) where mounting is not
    /// allowed; `unmount` takes it down.
    static func smallDisk() throws -> String? {
        let mountPoint = BrokerProcess.freshDirectory()
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try ChildProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", mountPoint], environment: [:])
        mount.wait()
        guard mount.terminationStatus == 0 else {
            // Mounting needs root (CI runs as root); elsewhere there is nothing to test on.
            Issue.record("cannot mount a tmpfs here (not root?): the disk-full test did not run")
            return nil
        }
        return mountPoint
    }

    static func unmount(_ mountPoint: String) {
        (try? ChildProcess("/bin/umount", ["-l", mountPoint], environment: [:]))?.wait()
    }

    @Test func aFullDiskRefusesPutsKeepsAcksAndReadsAndRecovers() throws {
        guard let mountPoint = try Self.smallDisk() else { return }
        defer { Self.unmount(mountPoint) }
        let filler = mountPoint + "/filler"
        _ = FileManager.default.createFile(atPath: filler, contents: Data(count: 4 << 20))
        let broker = try BrokerProcess(directory: mountPoint + "/data")
        let p = try broker.client()
        let payload = String(repeating: "x", count: 64 << 10)
        var confirmed: [UInt64] = []
        var fullError: String?
        for _ in 0..<2000 {
            p.send("PUT q \(payload.utf8.count)\r\n\(payload)\r\n")
            let f = try p.frame()
            if case .ok(let w) = f, let id = w.first.flatMap(UInt64.init) { confirmed.append(id); continue }
            if case let .error(code, message) = f { #expect(code == "INTERNAL"); fullError = message }
            break
        }
        #expect(fullError?.contains("storage full") == true, "\(fullError ?? "no error")")
        #expect(confirmed.count > 20)
        // ACKs and reads keep working while the disk is full.
        let w = try broker.client()
        #expect(try w.call("SUB q") == .ok([]))
        let m = try w.message()
        #expect(try w.call("ACK \(m.id)") == .ok([]))
        #expect(try p.stats().queues["q"]?.ready ?? 0 >= confirmed.count - 2)
        #expect(try p.failed().total == 0)
        let again = try p.call("PUT q 1\r\ny")
        #expect(again.errorCode == "INTERNAL")
        // Room again: writes succeed.
        try FileManager.default.removeItem(atPath: filler)
        Thread.sleep(forTimeInterval: 1.2)
        var accepted = false
        for _ in 0..<20 where !accepted {
            if case .ok = try p.call("PUT q 1\r\nz") { accepted = true } else { Thread.sleep(forTimeInterval: 0.3) }
        }
        #expect(accepted, "PUT works again once space is freed")
        // Nothing acknowledged was lost.
        broker.kill9()
        try broker.restart()
        let w2 = try broker.client()
        #expect(try w2.call("SUB q") == .ok([]))
        var present = Set<UInt64>()
        while try w2.hasMessage(within: 1) {
            let t = try w2.message()
            present.insert(t.id)
            w2.send("ACK \(t.id)\r\n")
        }
        for id in confirmed where id != m.id { #expect(present.contains(id), "confirmed put \(id) lost") }
        #expect(!present.contains(m.id))
    }

    @Test func aReplyTooLargeForTheFreeSpaceFailsInsteadOfFillingTheDisk() throws {
        guard let mountPoint = try Self.smallDisk() else { return }
        defer { Self.unmount(mountPoint) }
        let broker = try BrokerProcess(directory: mountPoint + "/data")
        let p = try broker.client()
        let w = try broker.client()
        #expect(try w.call("SUB big") == .ok([]))
        // 24 failures with 256 KiB payloads: a FAILED of them all is a 6 MiB reply, which
        // the broker spools to a file in its data directory.
        let payload = String(repeating: "p", count: 256 << 10)
        for _ in 0..<24 {
            _ = try p.put("big", payload)
            let m = try w.message()
            w.send("NACK \(m.id) 4\r\nboom\r\n")
            #expect(try w.frame() == .ok([]))
        }
        // Leave 7 MiB free: the reply would fit, but leave only 1 MiB to the store, less
        // than the eighth of the disk (3 MiB) the broker keeps for it.
        var fs = statvfs()
        #expect(statvfs(mountPoint, &fs) == 0)
        let free = Int(fs.f_bavail) * Int(fs.f_frsize)
        #expect(FileManager.default.createFile(atPath: mountPoint + "/filler", contents: Data(count: free - (7 << 20))))

        let f = try p.call("FAILED 100 0\r\n\r\n")
        guard case let .error(code, message) = f else {
            Issue.record("a FAILED reply that leaves the store 1 MiB got \(f)")
            return
        }
        #expect(code == "INTERNAL")
        #expect(message.contains("too large for the free space") && message.contains("keeps 3 MiB free"), "\(message)")
        // The connection goes on; a smaller reply (held in memory) and a PUT both work, and
        // the spool left nothing behind.
        #expect(try p.failed(limit: 2).tasks.count == 2)
        #expect(try p.put("small", String(repeating: "s", count: 64 << 10)) > 0)
        statvfs(mountPoint, &fs)
        #expect(Int(fs.f_bavail) * Int(fs.f_frsize) > 5 << 20)
    }
}
