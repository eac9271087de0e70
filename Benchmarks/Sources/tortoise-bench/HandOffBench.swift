import ArgumentParser
import Foundation

/// What a thread hand-off costs here: one thread waits on an `NSCondition` (as the store's
/// writer and flusher do), another signals it after an idle gap, and the time from the
/// signal to the waiter running is taken. The longer a thread sleeps, the deeper the CPU
/// it ran on may idle, and the longer it takes to wake: a store that hands each change to
/// another thread pays this per change when nothing else keeps the threads busy.
struct HandOffBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "handoff",
        abstract: "Wake-up latency of a thread waiting on an NSCondition, after idle gaps (the cost of a thread hand-off)."
    )

    @Option(help: "Idle gaps before each signal, in microseconds.") var gaps: [Int] = [0, 50, 200, 1000]
    @Option(help: "Wake-ups measured per gap.") var count = 5000

    func run() throws {
        print("time from the signal to the waiter running, after the waiter slept for the gap:")
        print(["idle gap", "p50", "p90", "p99"].map { pad($0, 10) }.joined(separator: "  "))
        for gap in gaps {
            let w = wakeUps(gap: gap)
            let cells = ["\(gap) µs"] + [w.count / 2, w.count * 9 / 10, w.count * 99 / 100].map { String(format: "%.1f µs", w[$0]) }
            print(cells.map { pad($0, 10) }.joined(separator: "  "))
        }
    }

    /// `count` wake-ups after `gap` µs each, sorted, in µs.
    func wakeUps(gap: Int) -> [Double] {
        final class Shared: @unchecked Sendable {
            let condition = NSCondition()
            var signalledAt: UInt64 = 0
            var pending = false
            var woken: [Double] = []
        }
        let shared = Shared()
        shared.woken.reserveCapacity(count)
        let n = count
        let waiter = Thread {
            shared.condition.lock()
            for _ in 0..<n {
                while !shared.pending { shared.condition.wait() }
                shared.pending = false
                shared.woken.append(Double(DispatchTime.now().uptimeNanoseconds - shared.signalledAt) / 1000)
                shared.condition.broadcast()
            }
            shared.condition.unlock()
        }
        waiter.start()
        for i in 0..<n {
            if gap > 0 { usleep(UInt32(gap)) }
            shared.condition.lock()
            shared.signalledAt = DispatchTime.now().uptimeNanoseconds
            shared.pending = true
            shared.condition.broadcast()
            // Wait until it ran, so that the next gap starts with it asleep again.
            while shared.woken.count <= i { shared.condition.wait() }
            shared.condition.unlock()
        }
        return shared.woken.sorted()
    }
}
