import Foundation
import Testing
import TortoiseProtocol
import TortoiseTestSupport
@testable import TortoiseStorage

/// `tortoised` on a disk that fails a flush (``FaultyDisk``): the client that waited gets
/// an error, the broker stops with status 74 instead of confirming later changes that a
/// power cut could lose, and started again it has every confirmed task.
@Suite(.serialized) struct DiskFailureTests {
    @Test func theBrokerStopsWhenTheDiskFailsAFlushAndARestartKeepsEveryConfirmedTask() throws {
        let disk: FaultyDisk
        do {
            disk = try FaultyDisk(in: BrokerProcess.freshDirectory())
        } catch {
            Issue.record("no loop-device disk here (not root?), the test did not run: \(error)")
            return
        }
        defer { disk.tearDown() }
        let data = disk.mountPoint + "/data"
        let broker = try BrokerProcess(directory: data)
        let p = try broker.client()
        // A worker holds the first task through the failure.
        let holder = try broker.client()
        #expect(try holder.call("SUB q") == .ok([]))
        // The first group commit fills the log's first page exactly; from the second page
        // on, the disk fails writes.
        let overhead = LoggedBatch(number: 1, now: 0, nextID: 1, nextSeq: 1, maxDeliveries: 10,
                                   ops: [.put(queue: "q", payload: [])]).encoded().count
        let first = String(repeating: "a", count: 4096 - overhead)
        let confirmed = try p.put("q", first)
        #expect(try holder.message().id == confirmed)
        try disk.failWrites(to: data + "/wal-0", from: 4096)

        let big = String(repeating: "b", count: 10_000)
        let reply = try p.call("PUT q \(big.utf8.count)\r\n\(big)")
        guard case let .error(code, message) = reply else {
            Issue.record("a PUT whose flush failed got \(reply)")
            return
        }
        #expect(code == "INTERNAL")
        #expect(message.contains("flushing the redo log to disk failed") && message.contains("no more changes"), "\(message)")

        // The broker stops by itself, saying why.
        #expect(broker.process.wait(timeout: 10), "tortoised kept running on a disk that failed a flush")
        #expect(broker.process.exitedNormally && broker.process.terminationStatus == 74)
        #expect(broker.stderr.contains("the disk failed a flush"), "\(broker.stderr)")
        #expect(broker.stderr.contains("exit status 74"), "\(broker.stderr)")
        // Said once, not again for the held task that could not go back as it stopped.
        #expect(broker.stderr.components(separatedBy: "the disk failed a flush").count == 2, "\(broker.stderr)")
        #expect(!broker.stderr.contains("returning task"), "\(broker.stderr)")
        #expect(try p.waitForClose())

        // With room on the disk again, a restart has the confirmed task and takes work.
        try disk.heal()
        try broker.restart()
        let w = try broker.client()
        #expect(try w.call("SUB q") == .ok([]))
        // The task held at the failure is back in its queue.
        let m = try w.message()
        #expect(m.id == confirmed && m.payload == first && m.delivery == 2)
        #expect(try w.call("ACK \(m.id)") == .ok([]))
        let p2 = try broker.client()
        _ = try p2.put("q", "after the restart")
        #expect(broker.terminate() == 0)
    }
}
