import Foundation
import Testing
import TortoiseTestSupport
@testable import TortoiseStorage

/// Power cuts on a real disk (``FaultyDisk``): what reached the disk, and nothing that
/// only the page cache held, is what the store opens on.
@Suite(.serialized) struct PowerCutTests {
    /// A change whose record is the first in the log's other file is confirmed by a flush
    /// of that file. The records still unflushed at the end of the first file (a delivery,
    /// which nobody waits for) must reach the disk with it: the replay reads the batches
    /// in an unbroken run of numbers, and would stop at the lost one before the confirmed.
    @Test func aChangeConfirmedInTheLogsOtherFileSurvivesAPowerCut() async throws {
        let disk: FaultyDisk
        do {
            disk = try FaultyDisk(in: freshDirectory())
        } catch {
            Issue.record("no loop-device disk here (not root?), the test did not run: \(error)")
            return
        }
        defer { disk.tearDown() }
        let dir = disk.mountPoint + "/data"
        // Room for two records of 600 bytes in a log file, but not three. The power cut
        // comes before any checkpoint of LMDB's file: only the log holds these changes.
        var c = testConfiguration(dir, backgroundCheckpoints: false, logFileSize: 1024)
        c.compactCheckInterval = nil
        let store = try TaskStore(c)
        let first = try await store.put("q", String(repeating: "a", count: 600))
        #expect(try await store.take("q")?.id == first)
        #expect(store.logSwitches == 0)
        let second = try await store.put("q", String(repeating: "b", count: 600))
        #expect(store.logSwitches == 1, "the second put's record did not go to the other file")

        let afterCut = try disk.powerCut()
        store.close()
        let reopened = try openStore(afterCut + "/data")
        // The delivery came back at open, to the front.
        #expect(try reopened.readyIDs("q") == [first, second], "a confirmed put was lost in the power cut")
        reopened.close()
    }
}
