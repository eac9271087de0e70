// The original story's worker: it sleeps one second per dot in each message. A message
// containing "work" gives it a nightmare (the task fails) unless it has processed a
// message containing "food" since it started: happy memories.
// Ctrl-C finishes the task in hand, then stops.
import Foundation
import NIOConcurrencyHelpers
import TortoiseClient

/// Prints a line at once, also when standard output is a file or a pipe.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

let happyMemories = NIOLockedValueBox(false)
let worker = TortoiseWorker(queues: ["tasks"]) { task in
    let message = task.text
    say(" [x] Received '\(message)'")
    try await Task.sleep(for: .seconds(message.filter { $0 == "." }.count))
    if message.contains("food") {
        happyMemories.withLockedValue { $0 = true }
    }
    if message.contains("work") && !happyMemories.withLockedValue({ $0 }) {
        say(" [!] Nightmare!")
        throw Nightmare()
    }
    say(" [x] Done")
}

struct Nightmare: Error, CustomStringConvertible {
    var description: String { "had a nightmare about work: no happy memories of food yet" }
}

signal(SIGINT, SIG_IGN)
let stopper = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
stopper.setEventHandler { worker.stop() }
stopper.resume()
signal(SIGTERM, SIG_IGN)
let terminator = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
terminator.setEventHandler { worker.stop() }
terminator.resume()

say(" [*] Waiting for tasks. To exit press CTRL+C")
do {
    try await worker.run()
} catch {
    FileHandle.standardError.write(Data("worker: \(error)\n".utf8))
    exit(1)
}
