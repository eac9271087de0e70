import Foundation
import Testing
import TortoiseStorage
import TortoiseTestSupport

/// A child process writes at full speed; it is killed with SIGKILL at a random moment,
/// many times over, on the same directory. Every change it was told is durable must be
/// there, and the store must reopen cleanly every time.
@Suite struct CrashTests {
    static var helper: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("tortoise-storage-stress").path
    }

    @Test func killedWritersLoseNothingTheyReported() async throws {
        let dir = freshDirectory()
        var acked = Set<TaskID>()
        var taken = Set<TaskID>()
        var put: [TaskID: (queue: String, payload: String)] = [:]
        let rounds = 12
        for round in 0..<rounds {
            let p = try ChildProcess(Self.helper, [dir, "16"], environment: ChildProcess.environment([:]), stdout: .pipe)
            // Wait for "ready" (opening replays the log: slow under sanitizers), then let
            // it write for a random while.
            let reader = LineReader(p.stdoutPipe)
            let patience = Date().addingTimeInterval(60)
            while reader.lines.isEmpty && Date() < patience {
                reader.drain()
                try await Task.sleep(for: .milliseconds(5))
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 50...400)))
            p.signal(SIGKILL)
            p.wait()
            // What it wrote before it died is all in the pipe now; a line cut by the kill
            // (no newline) proves nothing and is not among the lines.
            reader.drain()
            let lines = reader.lines
            #expect(lines.first == "ready", "round \(round)")
            for line in lines.dropFirst() where !line.isEmpty {
                let w = line.split(separator: " ")
                if w[0] == "P" { put[UInt64(w[1])!] = (String(w[2]), String(w[3])) }
                if w[0] == "A" { acked.insert(UInt64(w[1])!) }
                if w[0] == "T" { taken.insert(UInt64(w[1])!) }
            }
        }
        #expect(put.count > 100)
        #expect(!acked.isEmpty)
        let store = try openStore(dir)
        defer { store.close() }
        var present: [TaskID: String] = [:]
        // Each run of the child has queues of its own.
        for q in Set(put.values.map(\.queue)) {
            while let t = try await store.take(q) {
                present[t.id] = String(decoding: t.payload, as: UTF8.self)
                _ = try await store.perform(.ack(t.id))
            }
        }
        // A task that was taken may have been acked just before the kill, unreported;
        // one never taken cannot have been acked, so it must be there.
        for (id, task) in put where !taken.contains(id) {
            #expect(present[id] == task.payload, "durable put \(id) is missing")
        }
        for id in acked { #expect(present[id] == nil, "acked task \(id) came back") }
        // Nothing half-present: every task left is whole (payload matches its id's queue).
        for (id, payload) in present {
            if let known = put[id] { #expect(known.payload == payload) }
        }
    }
}
