// A child process for the storage crash test: it puts and acks tasks from many
// concurrent callers at full speed and prints each change once the store reports it
// durable. The test kills it with SIGKILL and checks the store against what it printed.
import Foundation
import TortoiseStorage

guard CommandLine.arguments.count >= 2, !CommandLine.arguments[1].hasPrefix("-") else {
    // A flag must not become a data directory (a `--help` once did).
    FileHandle.standardError.write(Data("usage: tortoise-storage-stress DIRECTORY [CALLERS]\n".utf8))
    exit(2)
}
let directory = CommandLine.arguments[1]
let callers = CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2]) ?? 8 : 8
let store: TaskStore
do {
    store = try TaskStore(TaskStore.Configuration(directory: directory))
} catch {
    FileHandle.standardError.write(Data("open failed: \(error)\n".utf8))
    exit(1)
}
let out = NSLock()
func say(_ line: String) {
    out.lock()
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
    out.unlock()
}
say("ready")
await withTaskGroup(of: Void.self) { group in
    for caller in 0..<callers {
        group.addTask {
            var n = 0
            while true {
                n += 1
                let payload = Array("c\(caller)-\(n)".utf8)
                guard case .put(let id) = try? await store.perform(.put(queue: "q\(caller)", payload: payload)) else { continue }
                say("P \(id) q\(caller) c\(caller)-\(n)")
                if n % 3 == 0 {
                    guard case .taken(let t?) = try? await store.perform(.take(queue: "q\(caller)")) else { continue }
                    say("T \(t.id)")
                    if (try? await store.perform(.ack(t.id))) != nil { say("A \(t.id)") }
                }
            }
        }
    }
}
