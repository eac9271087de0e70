import ArgumentParser
import Foundation
import TortoiseProtocol
import TortoiseStorage

/// The failed-store search at scale: 1,000,000 failures over 1,000 error groups and 20
/// queues; a selective word query, ERRORS, replaying 100,000 matches, and the index size.
struct SearchBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Failed-store search with 1,000,000 failures: query, ERRORS and replay times, index size."
    )

    @Option(help: "How many failures.") var failures = 1_000_000
    @Option(help: "How many error groups.") var groups = 1000
    @Option(help: "How many queues.") var queues = 20
    @Option(help: "Where to put the data.") var directory = FileManager.default.temporaryDirectory.path
    @Option(help: "Repetitions of each timed query (the median is shown).") var repetitions = 21

    static func letters(_ n: Int) -> String {
        String(String(n).map { Character(UnicodeScalar(UInt8(97) + UInt8(String($0))!)) })
    }

    /// The error of group `g`: its own words, a family word shared by a tenth of the groups,
    /// and variable parts (numbers, a hex id) that the fingerprint folds away.
    static func error(group g: Int, i: Int) -> String {
        "family\(letters(g % 10)) failure kind\(letters(g)) in module\(letters(g % 37)): timeout after \(i % 997) ms for order \(String(UInt64(i) &* 0x9E37_79B9_7F4A_7C15, radix: 16))"
    }

    func run() async throws {
        let dir = directory + "/tortoise-search-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = TaskStore.Configuration(directory: dir)
        config.maxMapSize = 64 << 30
        let store = try TaskStore(config)
        defer { store.close() }

        let start = Date()
        let callers = 128
        let payload = [UInt8](repeating: 120, count: 100)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for c in 0..<callers {
                group.addTask {
                    for i in stride(from: c, to: failures, by: callers) {
                        let queue = "queue\(i % queues)"
                        _ = try await store.perform(.put(queue: queue, payload: payload))
                        guard case .taken(let t?) = try await store.perform(.take(queue: queue)) else { continue }
                        _ = try await store.perform(.nack(t.id, error: Self.error(group: i % groups, i: i)))
                    }
                }
            }
            try await group.waitForAll()
        }
        let loaded = Date().timeIntervalSince(start)
        let figures = try store.sizeFigures()
        print("loaded \(figures.failures) failures (\(groups) groups, \(queues) queues) in \(String(format: "%.0f", loaded)) s")
        print(String(format: "index size: %.0f bytes per failed task (failure records: %.0f bytes per task)",
                     Double(figures.indexPages * figures.pageSize) / Double(figures.failures),
                     Double(figures.failedPages * figures.pageSize) / Double(figures.failures)))

        func median(_ label: String, _ body: () throws -> String) rethrows {
            var times: [Double] = []
            var note = ""
            // The most the resident set grew while the query ran (its peak is reset first).
            var grew = 0
            for _ in 0..<repetitions {
                let before = ProcessMemory.resetPeak()
                let t0 = DispatchTime.now().uptimeNanoseconds
                note = try body()
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
                grew = max(grew, ProcessMemory.peakKiB() - before)
            }
            times.sort()
            print(String(format: "%-58@ median %8.2f ms  (min %.2f, max %.2f)  peak +%.1f MiB  %@", label as NSString,
                         times[times.count / 2], times.first!, times.last!, Double(grew) / 1024, note as NSString))
        }

        let now = currentMillis()
        // One group's own word: 1/1000 of the failures.
        let selective = try QueryParser.parse("kind\(Self.letters(7))", now: now).get()
        try median("FAILED 100 selective word (1,000 matches)") {
            let page = try store.failed(selective, limit: 100)
            return "total \(page.total)"
        }
        let wordAndQueue = try QueryParser.parse("kind\(Self.letters(7)) queue:queue7", now: now).get()
        try median("FAILED 100 word + queue:") {
            "total \(try store.failed(wordAndQueue, limit: 100).total)"
        }
        let family = try QueryParser.parse("family\(Self.letters(3))", now: now).get()
        try median("FAILED 100 broad word (100,000 matches)") {
            "total \(try store.failed(family, limit: 100).total)"
        }
        try median("FAILED 100 empty query (newest first)") {
            "total \(try store.failed(FailedQuery(), limit: 100).total)"
        }
        let recent = try QueryParser.parse("since:1h queue:queue3", now: now).get()
        try median("FAILED 100 since:1h queue:queue3 (50,000 matches)") {
            "total \(try store.failed(recent, limit: 100).total)"
        }
        try median("ERRORS 100 (all groups)") {
            "groups \(try store.errorGroups(FailedQuery(), limit: 100).count)"
        }
        try median("ERRORS 100 broad word (a tenth of the failures)") {
            "groups \(try store.errorGroups(family, limit: 100).count)"
        }
        let every = try QueryParser.parse("failure", now: now).get()
        try median("ERRORS 100 failure (a word of every failure)") {
            "groups \(try store.errorGroups(every, limit: 100).count)"
        }
        try median("ERRORS 100 queue:queue5") {
            "groups \(try store.errorGroups(try QueryParser.parse("queue:queue5", now: now).get(), limit: 100).count)"
        }
        // A producer puts one task after another around the REPLAY: how long its PUTs
        // wait for the writer while the REPLAY holds it.
        let producer = Task { () -> [Double] in
            var waits: [Double] = []
            let end = Date().addingTimeInterval(2.5)
            while Date() < end {
                let p0 = DispatchTime.now().uptimeNanoseconds
                _ = try? await store.perform(.put(queue: "other", payload: payload))
                waits.append(Double(DispatchTime.now().uptimeNanoseconds - p0) / 1e6)
            }
            return waits
        }
        try await Task.sleep(for: .milliseconds(100))
        _ = ProcessMemory.resetPeak()
        let anonymousBefore = ProcessMemory.field("RssAnon")
        let t0 = Date()
        let outcome = try await store.perform(.replay(family))
        let replayTime = Date().timeIntervalSince(t0)
        if case .replayed(let per) = outcome {
            print(String(format: "REPLAY family word: %d tasks in %.2f s (one transaction, one fsync)", per.values.reduce(0, +), replayTime))
        }
        _ = ProcessMemory.resetPeak()
        let anonymousAfter = ProcessMemory.field("RssAnon")
        let waits = await producer.value.sorted()
        // LMDB copies every page a transaction changes into memory of its own, and keeps
        // the copies for its later transactions until the store lets them go (once a
        // checkpoint has written them): how long until the memory is back.
        let replayed = Date()
        var later = anonymousAfter
        while later > anonymousBefore + 16 << 10 && Date().timeIntervalSince(replayed) < 30 {
            try await Task.sleep(for: .milliseconds(100))
            _ = ProcessMemory.resetPeak()
            later = ProcessMemory.field("RssAnon")
        }
        print(String(format: "anonymous resident memory: %.1f MiB before the REPLAY, %.1f MiB right after, %.1f MiB %.1f s later (heap trimmed)",
                     Double(anonymousBefore) / 1024, Double(anonymousAfter) / 1024, Double(later) / 1024,
                     Date().timeIntervalSince(replayed)))
        print(String(format: "a producer's PUTs over 2.5 s around the REPLAY: %d, p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms",
                     waits.count, waits[waits.count / 2], waits[waits.count * 99 / 100], waits[waits.count * 999 / 1000], waits.last!))
    }
}

/// The process's resident set from /proc/self/status, in KiB.
enum ProcessMemory {
    static func field(_ name: String) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return 0
    }

    /// Gives the heap's free memory back, resets the peak resident set (VmHWM) to the
    /// current one, and returns that.
    static func resetPeak() -> Int {
        // glibc's malloc_trim, which Swift's Glibc module does not declare.
        if let trim = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") {
            _ = unsafeBitCast(trim, to: (@convention(c) (Int) -> Int32).self)(0)
        }
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        if fd >= 0 { _ = write(fd, "5", 1); close(fd) }
        return field("VmRSS")
    }

    static func peakKiB() -> Int { field("VmHWM") }
}
