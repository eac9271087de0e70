// A child process for the storage crash tests: it puts, acks and now and then nacks
// tasks from many concurrent callers at full speed, replays or deletes its failures by
// turns, and prints each change once the store reports it durable. The tests kill it
// with SIGKILL (or stop it and cut the power of its disk) and check the store against
// what it printed.
//
// TORTOISE_STRESS_SMALL=1 makes everything that moves between files happen often: redo-log
// files of 4 KiB, a compaction looked at every 50 ms from 256 KiB of file, and LMDB's
// environment opened again after every replay or delete.
import Foundation
import TortoiseStorage

guard CommandLine.arguments.count >= 2, !CommandLine.arguments[1].hasPrefix("-") else {
    // A flag must not become a data directory (a `--help` once did).
    FileHandle.standardError.write(Data("usage: tortoise-storage-stress DIRECTORY [CALLERS]\n".utf8))
    exit(2)
}
let out = NSLock()
let say: @Sendable (String) -> Void = { line in
    out.lock()
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
    out.unlock()
}
let directory = CommandLine.arguments[1]
let callers = CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2]) ?? 8 : 8
let store: TaskStore
do {
    var configuration = TaskStore.Configuration(directory: directory)
    if ProcessInfo.processInfo.environment["TORTOISE_STRESS_SMALL"] == "1" {
        configuration.logFileSize = 4 << 10
        configuration.compactFilesFrom = 256 << 10
        configuration.compactCheckInterval = .milliseconds(50)
        configuration.compacted = { _, _, _ in say("C") }
        configuration.reopenAfterRemovingFailures = 1
        configuration.reopened = { _ in say("O") }
    }
    store = try TaskStore(configuration)
} catch {
    FileHandle.standardError.write(Data("open failed: \(error)\n".utf8))
    exit(1)
}
say("ready")
await withTaskGroup(of: Void.self) { group in
    for caller in 0..<callers {
        group.addTask {
            // Queues of this run only: a replay or delete by queue must not reach the
            // failures an earlier run of this program left.
            let queue = "r\(getpid())q\(caller)"
            var failedHere: [TaskID] = []
            var n = 0
            while true {
                n += 1
                let payload = Array("c\(caller)-\(n)".utf8)
                guard case .put(let id) = try? await store.perform(.put(queue: queue, payload: payload)) else { continue }
                say("P \(id) \(queue) c\(caller)-\(n)")
                if n % 3 == 0 {
                    guard case .taken(let t?) = try? await store.perform(.take(queue: queue)) else { continue }
                    say("T \(t.id)")
                    if n % 15 == 0 {
                        // Now and then a failure, so that the failed store and its indexes
                        // change too.
                        if (try? await store.perform(.nack(t.id, error: "boom \(n) in caller \(caller)"))) != nil {
                            say("N \(t.id)")
                            failedHere.append(t.id)
                        }
                    } else if (try? await store.perform(.ack(t.id))) != nil {
                        say("A \(t.id)")
                    }
                }
                if n % 90 == 0, !failedHere.isEmpty {
                    // The queue's failures go back to it, or are deleted, by turns.
                    var query = FailedQuery()
                    query.queues = [queue]
                    // Said first: once the change is durable, a cut before its report
                    // may leave the failures replayed or deleted.
                    say("Q \(queue)")
                    if n % 180 == 0 {
                        if case .replayed? = try? await store.perform(.replay(query)) {
                            for id in failedHere { say("R \(id)") }
                            failedHere = []
                        }
                    } else if case .deleted? = try? await store.perform(.delete(query)) {
                        for id in failedHere { say("D \(id)") }
                        failedHere = []
                    }
                }
            }
        }
    }
}
