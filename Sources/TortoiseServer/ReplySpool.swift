import Foundation
import NIOCore
import TortoiseProtocol
import TortoiseStorage

/// The body of a `JSON` reply, written as it is encoded: in memory while it is small,
/// then in an unnamed file in the data directory, so that a `FAILED` over thousands of
/// large payloads costs disk for a moment, not gigabytes of memory. The frame states its
/// length first, so the body is whole before its first byte is sent; the file is sent
/// with `sendfile` at the pace the client reads.
final class ReplySpool {
    /// A finished body.
    enum Body: Sendable {
        case memory(ByteBuffer)
        case file(SpoolFile)
    }

    private let directory: String
    private let memoryLimit: Int
    private var buffer = ByteBuffer()
    private var file: SpoolFile?
    private let encoder = ReplyJSON.encoder()
    private var elements = 0

    /// A spool that moves to a file in `directory` once the body passes `memoryLimit` bytes.
    init(directory: String, memoryLimit: Int) {
        self.directory = directory
        self.memoryLimit = memoryLimit
    }

    func append(_ text: StaticString) throws(StorageError) {
        buffer.writeStaticString(text)
        try spillIfBig()
    }

    func append(_ bytes: some Collection<UInt8>) throws(StorageError) {
        buffer.writeBytes(bytes)
        try spillIfBig()
    }

    /// Appends `value` as the next element of the body's array: a comma before all but
    /// the first.
    func appendElement(_ value: some Encodable) throws(StorageError) {
        if elements > 0 { try append(",") }
        elements += 1
        try append(ReplyJSON.encode(value, with: encoder))
    }

    /// The whole body; the spool is spent.
    func finish() throws(StorageError) -> Body {
        guard let file else { return .memory(buffer) }
        try file.write(&buffer)
        self.file = nil
        return .file(file)
    }

    private func spillIfBig() throws(StorageError) {
        if file == nil {
            guard buffer.readableBytes > memoryLimit else { return }
            file = try SpoolFile(directory: directory)
        }
        // Written in pieces of about a quarter of the limit: the buffer stays small.
        if buffer.readableBytes >= max(memoryLimit / 4, 64 << 10) {
            try file!.write(&buffer)
            buffer.clear()
        }
    }
}

/// A file that only its descriptor reaches: named `.reply-XXXXXX` in the data directory
/// and removed at once, it goes away when closed, or with the process (a name a crash
/// left between the two steps is removed when the broker starts).
///
/// The store writes to the same filesystem, so a spool never takes its last room: it
/// leaves an eighth of the filesystem free, at most 64 MiB, and a reply that would need
/// more fails with an error that says so (the client may ask for fewer tasks) instead of
/// filling the disk and making the store refuse `PUT`s meanwhile.
final class SpoolFile: @unchecked Sendable { // one owner at a time: the spool, then the reply
    static let namePrefix = ".reply-"
    private var descriptor: CInt
    private(set) var length = 0
    /// The free room on the filesystem that the spool leaves to the store.
    let keepsFree: Int

    init(directory: String) throws(StorageError) {
        var template = Array((directory + "/" + Self.namePrefix + "XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw StorageError(errno == ENOSPC ? .diskFull : .io,
                               "a large reply could not be spooled to \(directory): \(String(cString: strerror(errno)))")
        }
        _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        descriptor = fd
        var fs = statvfs()
        keepsFree = fstatvfs(fd, &fs) == 0 ? min(64 << 20, Int(fs.f_blocks) * Int(fs.f_frsize) / 8) : 0
    }

    /// Removes the spool files a crash left in `directory`.
    static func removeLeftovers(in directory: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names where name.hasPrefix(namePrefix) { unlink(directory + "/" + name) }
    }

    func write(_ buffer: inout ByteBuffer) throws(StorageError) {
        var fs = statvfs()
        if fstatvfs(descriptor, &fs) == 0, Int(fs.f_bavail) * Int(fs.f_frsize) - buffer.readableBytes < keepsFree {
            throw StorageError(.diskFull, "the reply is too large for the free space on the data directory's disk "
                + "(\(Self.size(length + buffer.readableBytes)) so far, and the broker keeps \(Self.size(keepsFree)) free for its store); "
                + "ask for fewer tasks or narrow the query")
        }
        while buffer.readableBytes > 0 {
            let n = buffer.readableBytesView.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw StorageError(errno == ENOSPC ? .diskFull : .io,
                                   "a large reply could not be spooled: \(String(cString: strerror(errno)))")
            }
            buffer.moveReaderIndex(forwardBy: n)
            length += n
        }
    }

    static func size(_ bytes: Int) -> String {
        bytes >= 1 << 20 ? "\(bytes >> 20) MiB" : "\(max(1, bytes >> 10)) KiB"
    }

    /// The descriptor, for NIO to send and close; this object no longer closes it.
    func takeDescriptor() -> CInt {
        let fd = descriptor
        descriptor = -1
        return fd
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
    }
}
