import Foundation
import Testing
import TortoiseProtocol
import TortoiseTestSupport

/// The data directory on a small filesystem of its own (a tmpfs), filled while clients write.
@Suite(.serialized) struct DiskFullTests {
    @Test func aFullDiskRefusesPutsKeepsAcksAndReadsAndRecovers() throws {
        let mountPoint = BrokerProcess.freshDirectory()
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try ChildProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", mountPoint], environment: [:])
        mount.wait()
        guard mount.terminationStatus == 0 else {
            // Mounting needs root (CI runs as root); elsewhere there is nothing to test on.
            Issue.record("cannot mount a tmpfs here (not root?): the disk-full test did not run")
            return
        }
        defer {
            (try? ChildProcess("/bin/umount", ["-l", mountPoint], environment: [:]))?.wait()
        }
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
}
