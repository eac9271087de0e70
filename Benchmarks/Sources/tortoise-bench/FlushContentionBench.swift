import ArgumentParser
import Foundation

/// What slows the redo log's flush down beside LMDB: one thread appends log-sized
/// records to a preallocated file and flushes each with `fdatasync`, alone and with
/// what the store does beside it: page writes into another file (LMDB's commit, which
/// leaves them in the page cache) and that file flushed every 10 ms on another thread
/// (the store's checkpoint). Each flush is timed on its own, and the rates are compared
/// with the raw rate that `tortoise-bench storage` measures (100 bytes written and
/// flushed), measured in the same run.
struct FlushContentionBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flush-contention",
        abstract: "How long a log append's fdatasync takes alone, beside page writes to another file, and beside that file's flush (the store's checkpoint)."
    )

    @Option(help: "Where to put the files (a directory on the disk to measure).") var directory = "/tmp"
    @Option(help: "Seconds per measurement.") var seconds = 2.0
    @Option(help: "Pages (4 KiB, at random places in a 32 MiB file) written before each flush.") var pages = 10
    @Option(help: "How often the other file is flushed, in milliseconds, in the last row.") var checkpointMilliseconds = 10

    enum Mode: CaseIterable {
        case raw, log, pageWrites, checkpoints
    }

    func run() throws {
        let base = directory + "/tortoise-flush-\(getpid())"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let log = try Self.preallocated(base + "/log", bytes: 256 << 10)
        let data = try Self.preallocated(base + "/data", bytes: 32 << 20)
        defer { close(log); close(data) }

        let label = { (s: String) in s + String(repeating: " ", count: max(0, 52 - s.count)) }
        print(label("beside each flush") + ["flushes/s", "flush p50", "flush p99", "writes p50", "writes p99", "vs raw"].map { pad($0, 10) }.joined(separator: "  "))
        var rawRate: Double?
        for mode in Mode.allCases {
            let (rate, flushes, writes) = measure(mode, log: log, data: data)
            if rawRate == nil { rawRate = rate }
            let name = switch mode {
            case .raw: "raw: 100 bytes written, as the storage bench does"
            case .log: "log: 163-byte records appended (256 KiB file)"
            case .pageWrites: "log + \(pages) page writes to another file"
            case .checkpoints: "log + page writes + that file flushed every \(checkpointMilliseconds) ms"
            }
            let µs = { (sorted: [Double], q: Double) in String(format: "%.0f µs", sorted[Int(Double(sorted.count) * q)]) }
            let cells = [String(Int(rate)), µs(flushes, 0.5), µs(flushes, 0.99), µs(writes, 0.5), µs(writes, 0.99),
                         String(format: "%.2f×", rate / rawRate!)]
            print(label(name) + cells.map { pad($0, 10) }.joined(separator: "  "))
        }
    }

    /// A file of `bytes` zeros, flushed: later writes overwrite allocated blocks.
    static func preallocated(_ path: String, bytes: Int) throws -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ValidationError("cannot open \(path): \(String(cString: strerror(errno)))") }
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        var at = 0
        while at < bytes {
            let n = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, min($0.count, bytes - at), off_t(at)) }
            guard n > 0 else { throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))") }
            at += n
        }
        guard fsync(fd) == 0 else { throw ValidationError("cannot flush \(path)") }
        return fd
    }

    /// Flushes per second in `mode`; each flush's time, and the time of the writes before
    /// it (the record and the pages), in µs, sorted.
    func measure(_ mode: Mode, log: Int32, data: Int32) -> (Double, [Double], [Double]) {
        final class Stop: @unchecked Sendable {
            let lock = NSLock()
            var stopped = false
            var isStopped: Bool { lock.withLock { stopped } }
        }
        let stop = Stop()
        let checkpointerDone = DispatchSemaphore(value: 0)
        if mode == .checkpoints {
            let interval = UInt32(checkpointMilliseconds * 1000)
            Thread {
                while !stop.isStopped {
                    usleep(interval)
                    fdatasync(data)
                }
                checkpointerDone.signal()
            }.start()
        }
        let record = [UInt8](repeating: 7, count: mode == .raw ? 100 : 163)
        let page = [UInt8](repeating: 9, count: 4096)
        var flushes: [Double] = []
        var writes: [Double] = []
        flushes.reserveCapacity(100_000)
        writes.reserveCapacity(100_000)
        var offset = 0
        // Cheap pseudo-random page numbers (the system generator makes a system call each).
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        let start = DispatchTime.now().uptimeNanoseconds
        let end = start + UInt64(seconds * 1e9)
        var now = start
        while now < end {
            let writing = now
            if mode == .raw {
                _ = record.withUnsafeBytes { pwrite(log, $0.baseAddress, $0.count, off_t(flushes.count % 64 * 4096)) }
            } else {
                if offset + record.count > 256 << 10 { offset = 0 }
                _ = record.withUnsafeBytes { pwrite(log, $0.baseAddress, $0.count, off_t(offset)) }
                offset += record.count
            }
            if mode == .pageWrites || mode == .checkpoints {
                for _ in 0..<pages {
                    seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    let at = Int(seed >> 33) % (32 << 8) * 4096
                    _ = page.withUnsafeBytes { pwrite(data, $0.baseAddress, $0.count, off_t(at)) }
                }
            }
            let before = DispatchTime.now().uptimeNanoseconds
            writes.append(Double(before - writing) / 1000)
            fdatasync(log)
            now = DispatchTime.now().uptimeNanoseconds
            flushes.append(Double(now - before) / 1000)
        }
        stop.lock.withLock { stop.stopped = true }
        if mode == .checkpoints { checkpointerDone.wait() }
        // The next mode starts with the other file clean.
        fdatasync(data)
        return (Double(flushes.count) / (Double(now - start) / 1e9), flushes.sorted(), writes.sorted())
    }
}
