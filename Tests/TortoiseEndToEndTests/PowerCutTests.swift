import Foundation
import Testing
import TortoiseProtocol
import TortoiseTestSupport
@testable import TortoiseStorage

/// `tortoised` on a ``FaultyDisk`` under load, stopped at a random moment and its disk
/// copied: what a power cut leaves. Every `PUT` whose `OK` a producer got is in the copy
/// (unless a worker took it), and no task whose `ACK` got its `OK` came back. SIGKILL
/// tests cannot see a reply sent before its flush (the page cache survives a crash);
/// this one can.
@Suite(.serialized) struct BrokerPowerCutTests {
    /// What the clients were told, filled in from their threads.
    final class Ledger: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var confirmedPuts = Set<UInt64>()
        private(set) var delivered = Set<UInt64>()
        private(set) var confirmedAcks = Set<UInt64>()
        func put(_ id: UInt64) { lock.withLock { _ = confirmedPuts.insert(id) } }
        func delivered(_ id: UInt64) { lock.withLock { _ = delivered.insert(id) } }
        func acked(_ id: UInt64) { lock.withLock { _ = confirmedAcks.insert(id) } }
        var snapshot: (puts: Set<UInt64>, delivered: Set<UInt64>, acks: Set<UInt64>) {
            lock.withLock { (confirmedPuts, delivered, confirmedAcks) }
        }
    }

    @Test func aPowerCutUnderLoadLosesNoConfirmedPutOrAck() throws {
        let disk: FaultyDisk
        do {
            disk = try FaultyDisk(in: BrokerProcess.freshDirectory(), megabytes: 64)
        } catch {
            Issue.record("no loop-device disk here (not root?), the test did not run: \(error)")
            return
        }
        defer { disk.tearDown() }
        let data = disk.mountPoint + "/data"
        let ledger = Ledger()
        for round in 0..<4 {
            // Each round starts on the disk as the last one's SIGKILL left it.
            let broker = try BrokerProcess(directory: data)
            let done = DispatchGroup()
            for _ in 0..<2 {
                let p = try broker.client()
                done.enter()
                Thread.detachNewThread {
                    defer { done.leave() }
                    while let id = try? p.put("q", "task") { ledger.put(id) }
                }
            }
            for _ in 0..<2 {
                let w = try broker.client()
                #expect(try w.call("SUB q") == .ok([]))
                done.enter()
                Thread.detachNewThread {
                    defer { done.leave() }
                    // The next MSG comes before the last ACK's OK: match OKs to ACKs in order.
                    var waiting: [UInt64] = []
                    while let f = try? w.rawFrame(timeout: 30) {
                        switch f {
                        case let .message(id, _, _, _):
                            ledger.delivered(id)
                            w.send("ACK \(id)\r\n")
                            waiting.append(id)
                        case .ok:
                            if !waiting.isEmpty { ledger.acked(waiting.removeFirst()) }
                        default:
                            return
                        }
                    }
                }
            }
            Thread.sleep(forTimeInterval: Double.random(in: 0.2...0.8))
            let afterCut = try disk.powerCut(during: broker.process)
            // The clients see the connections close and stop.
            #expect(done.wait(timeout: .now() + 30) == .success, "round \(round): the clients did not stop")

            let told = ledger.snapshot
            let ready = try Self.readyTasks(in: afterCut + "/data")
            let missing = told.puts.subtracting(told.delivered).subtracting(ready)
            #expect(missing.isEmpty, "round \(round): \(missing.count) confirmed puts missing after the power cut, e.g. \(missing.sorted().prefix(5))")
            let back = told.acks.intersection(ready)
            #expect(back.isEmpty, "round \(round): \(back.count) acked tasks came back after the power cut, e.g. \(back.sorted().prefix(5))")
            try disk.drop(copy: afterCut)
        }
        let told = ledger.snapshot
        // Thousands of each in a release or debug build; a few hundred under a sanitizer.
        #expect(told.puts.count > 50 && told.acks.count > 10, "\(told.puts.count) puts and \(told.acks.count) acks: the test did not cover what it is for")
    }

    /// The ready tasks of `q` in the store in `dir` (tasks in flight come back at open).
    static func readyTasks(in dir: String) throws -> Set<UInt64> {
        var c = TaskStore.Configuration(directory: dir)
        c.compactCheckInterval = nil
        let store = try TaskStore(c)
        defer { store.close() }
        return Set(try store.readyIDs("q"))
    }
}
