#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A real disk that can be made to fail writes: an ext4 filesystem on a loop device whose
/// backing file (the "disk") lives on a small tmpfs of its own.
///
/// The backing file is fully allocated at first. ``failWrites(to:from:)`` punches holes
/// in it under the blocks of one file and fills the tmpfs, so that the kernel's writeback
/// of those blocks fails (the loop device reports an I/O error, and `fsync` of the file
/// fails) while every other block still writes. ``heal()`` gives the room back.
/// ``powerCut()`` copies the backing file as it is at that moment, which is what a power
/// cut would leave (whatever only the page cache holds is not in it), and mounts the copy.
///
/// Needs root, loop devices, `mkfs.ext4` and `filefrag` (CI runs as root on a machine
/// that has them).
public final class FaultyDisk: @unchecked Sendable {
    /// Where the filesystem is mounted.
    public let mountPoint: String
    private let base: String
    private let tmpfs: String
    private let image: String
    private var loops: [String] = []
    private var mounts: [String] = []
    private var copies = 0
    /// The loop device of each mounted copy, by where it is mounted.
    private var copyLoops: [String: String] = [:]

    /// Sets up a disk of `megabytes` in a new folder `base`.
    public init(in base: String, megabytes: Int = 32) throws {
        self.base = base
        tmpfs = base + "/tmpfs"
        image = tmpfs + "/disk.img"
        mountPoint = base + "/mnt"
        for dir in [tmpfs, mountPoint] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        do {
            try Self.run("/bin/mount", "-t", "tmpfs", "-o", "size=\(megabytes + 8)m", "tmpfs", tmpfs)
            mounts.append(tmpfs)
            // Allocated now, so that only the holes punched later lack room.
            try Self.run("/usr/bin/fallocate", "-l", "\(megabytes)m", image)
            let loop = try Self.attach(image)
            loops.append(loop)
            try Self.run("/sbin/mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", loop)
            try Self.run("/bin/mount", loop, mountPoint)
            mounts.append(mountPoint)
        } catch {
            tearDown()
            throw error
        }
    }

    deinit { tearDown() }

    /// Makes every later writeback of `path` (a file on this disk) at or past byte
    /// `offset` fail, until ``heal()``. What the file already holds there is lost from the
    /// disk (the page cache still has it), so pick an offset past the data that counts.
    ///
    /// Pick one where a write begins, too: the loop driver reports a write that failed
    /// only in part (its first pages written, the rest not) as done, so a range whose
    /// writes begin before `offset` would lose its tail silently.
    public func failWrites(to path: String, from offset: Int) throws {
        // Blocks are allocated at writeback: flush first, so that every extent has its place.
        let file = open(path, O_RDWR | O_CLOEXEC)
        guard file >= 0, fsync(file) == 0 else { throw FaultyDiskError("cannot flush \(path): \(String(cString: strerror(errno)))") }
        close(file)
        for extent in try Self.extents(of: path) {
            let start = max(extent.logical, offset)
            let end = extent.logical + extent.length
            guard start < end else { continue }
            let physical = extent.physical + (start - extent.logical)
            try Self.run("/usr/bin/fallocate", "--punch-hole", "--keep-size", "-o", "\(physical)", "-l", "\(end - start)", image)
        }
        let fd = open(tmpfs + "/filler", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FaultyDiskError("cannot create the filler: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x55, count: 64 << 10)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        guard errno == ENOSPC else { throw FaultyDiskError("filling the tmpfs stopped early: \(String(cString: strerror(errno)))") }
    }

    /// Gives the disk room again: writes that failed stay lost, later ones succeed.
    public func heal() throws {
        guard unlink(tmpfs + "/filler") == 0 else { throw FaultyDiskError("cannot remove the filler: \(String(cString: strerror(errno)))") }
    }

    /// What a power cut at this moment would leave: a copy of the disk (no page cache),
    /// mounted (its journal is replayed as at a boot). Returns where.
    ///
    /// The copy is read while the disk is live, front to back: it is a power-cut image
    /// only if nothing is flushed to the disk while it is taken. Stop the writers first
    /// (a store that is halted, or whose background checkpoints are off, or a process
    /// stopped by ``powerCut(during:)``): a checkpoint
    /// flushed during the copy can land in it without the pages it names, and LMDB then
    /// reads past the end of its file (SIGBUS).
    public func powerCut() throws -> String {
        copies += 1
        let copy = base + "/after-power-cut-\(copies).img"
        let at = base + "/after-power-cut-\(copies)"
        try FileManager.default.createDirectory(atPath: at, withIntermediateDirectories: true)
        try Self.run("/bin/cp", "--sparse=always", image, copy)
        let loop = try Self.attach(copy)
        loops.append(loop)
        copyLoops[at] = loop
        try Self.run("/bin/mount", loop, at)
        mounts.append(at)
        return at
    }

    /// A power cut while `process` runs on this disk, at this moment: it is stopped
    /// (every thread of it, so that no flush of its is half done), the disk is copied as
    /// ``powerCut()`` does, and the process is killed, as the power cut would. Returns
    /// where the copy is mounted.
    public func powerCut(during process: ChildProcess) throws -> String {
        process.signal(SIGSTOP)
        defer {
            process.signal(SIGKILL)
            process.signal(SIGCONT)
            process.wait()
        }
        guard process.waitUntilStopped() else { throw FaultyDiskError("process \(process.pid) did not stop") }
        return try powerCut()
    }

    /// Unmounts and detaches a copy made by ``powerCut()``, and removes it.
    public func drop(copy at: String) throws {
        guard let m = mounts.firstIndex(of: at), let loop = copyLoops.removeValue(forKey: at) else {
            throw FaultyDiskError("\(at) is not a mounted copy")
        }
        // Lazily: a store closed a moment ago may not have let go of its files yet.
        try Self.run("/bin/umount", "-l", at)
        mounts.remove(at: m)
        try Self.run("/sbin/losetup", "-d", loop)
        loops.removeAll { $0 == loop }
        try? FileManager.default.removeItem(atPath: at + ".img")
        try? FileManager.default.removeItem(atPath: at)
    }

    /// Forgets the disk without taking it down, as a test process that was killed would
    /// (for the test of ``takeDownEverything(under:)``).
    public func abandon() {
        mounts = []
        loops = []
    }

    /// Unmounts and detaches everything; safe to call more than once.
    public func tearDown() {
        for m in mounts.reversed() { _ = try? Self.run("/bin/umount", "-l", m) }
        mounts = []
        for l in loops.reversed() { _ = try? Self.run("/sbin/losetup", "-d", l) }
        loops = []
    }

    /// Unmounts every file system mounted under `folder` and detaches the loop devices
    /// whose backing files lie under it: what the disks of a test process that was
    /// killed leave behind. Does nothing where it may not (not root).
    public static func takeDownEverything(under folder: String) {
        let prefix = folder.hasSuffix("/") ? folder : folder + "/"
        // Looked up while the tmpfs holding a disk's backing file is still mounted (after,
        // losetup shows the file's path inside the tmpfs only). A loop device still in
        // use is detached once its file system is unmounted.
        // "/dev/loop3: [0043]:2 (/tmp/.../disk.img)"
        let loops = (try? run("/sbin/losetup", "-a")) ?? ""
        for line in loops.split(separator: "\n") {
            guard let open = line.firstIndex(of: "("), line.last == ")",
                  line[line.index(after: open)..<line.index(before: line.endIndex)].hasPrefix(prefix),
                  let colon = line.firstIndex(of: ":") else { continue }
            _ = try? run("/sbin/losetup", "-d", String(line[..<colon]))
        }
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        let points = mounts.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 2 else { return nil }
            // /proc/mounts writes a space in a path as \040.
            let point = fields[1].replacingOccurrences(of: "\\040", with: " ")
            return point.hasPrefix(prefix) ? point : nil
        }
        for point in points { _ = try? run("/bin/umount", "-l", point) }
    }

    private static func attach(_ file: String) throws -> String {
        let out = try run("/sbin/losetup", "--find", "--show", file)
        let loop = out.trimmingCharacters(in: .whitespacesAndNewlines)
        guard loop.hasPrefix("/dev/loop") else { throw FaultyDiskError("losetup printed '\(out)'") }
        return loop
    }

    /// The extents of `path` in bytes: logical offset, physical offset on the device, length.
    static func extents(of path: String) throws -> [(logical: Int, physical: Int, length: Int)] {
        let out = try run("/usr/sbin/filefrag", "-v", "-b4096", path)
        var found: [(logical: Int, physical: Int, length: Int)] = []
        // "   0:        0..      63:       2176..      2239:     64:             last,eof"
        for line in out.split(separator: "\n") {
            let fields = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count >= 4, Int(fields[0]) != nil else { continue }
            let logical = fields[1].components(separatedBy: "..").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            let physical = fields[2].components(separatedBy: "..").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard logical.count == 2, physical.count == 2, let length = Int(fields[3]) else { continue }
            guard !line.contains("delalloc"), !line.contains("unknown"), physical[0] > 0 else {
                throw FaultyDiskError("\(path) has blocks with no place on the disk yet:\n\(out)")
            }
            found.append((logical[0] * 4096, physical[0] * 4096, length * 4096))
        }
        guard !found.isEmpty else { throw FaultyDiskError("no extents of \(path) in filefrag's output:\n\(out)") }
        return found
    }

    /// Runs a command to its end; its stdout. Throws when it fails.
    @discardableResult
    static func run(_ path: String, _ arguments: String...) throws -> String {
        let errors = FileManager.default.temporaryDirectory.appendingPathComponent("faulty-disk-\(UUID().uuidString)").path
        defer { unlink(errors) }
        let child = try ChildProcess(path, arguments, environment: ChildProcess.environment([:]), stdout: .pipe, stderr: .file(errors, append: false))
        var out = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(child.stdoutPipe, $0.baseAddress, $0.count) }
            if n > 0 { out += buffer[0..<n] } else if n < 0 && errno == EINTR { continue } else { break }
        }
        child.wait()
        guard child.exitedNormally, child.terminationStatus == 0 else {
            let text = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
            throw FaultyDiskError("\(([path] + arguments).joined(separator: " ")) failed (\(child.terminationStatus)): \(text)")
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Setting up or driving a ``FaultyDisk`` failed.
public struct FaultyDiskError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
