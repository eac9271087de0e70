#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Flushes a directory's entries (files created, renamed or removed in it) to disk.
/// False when it cannot be opened or flushed.
func fsyncDirectory(_ path: String) -> Bool {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { _ = close(fd) }
    return fsync(fd) == 0
}
