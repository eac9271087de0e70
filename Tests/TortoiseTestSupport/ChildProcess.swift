#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A child process for tests, started with `posix_spawn`.
///
/// Foundation's `Process` was not safe for tests that start many processes at once: its
/// pipes are inherited by every other child started meanwhile (so an end-of-file never
/// comes), and its one shared reaper thread can block in `waitpid` on a child that is
/// still running, after which no other child's exit is ever noticed (a whole test run
/// hung that way). Here the child gets exactly stdin from `/dev/null` and the stdout and
/// stderr asked for, none of the test process's other descriptors, and only this object
/// reaps it, so a signal never reaches a PID that has been reused.
public final class ChildProcess: @unchecked Sendable {
    /// Where the child's stdout or stderr goes.
    public enum Output: Sendable {
        /// Discarded.
        case null
        /// A file, created if missing; appended to or truncated.
        case file(String, append: Bool)
        /// A pipe whose read end is ``stdoutPipe`` (stdout only).
        case pipe
    }

    /// The child's process id.
    public let pid: pid_t
    /// The read end of the child's stdout when it was asked for as ``Output/pipe``, else -1.
    /// Close-on-exec; closed when this object goes away.
    public let stdoutPipe: Int32

    private let lock = NSLock()
    private var waitStatus: Int32?

    /// Starts `path` with `arguments` (not counting the program itself) and exactly `environment`.
    public init(_ path: String, _ arguments: [String], environment: [String: String],
                stdout: Output = .null, stderr: Output = .null) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var toClose: [Int32] = []
        defer { for fd in toClose { close(fd) } }

        func redirect(_ output: Output, as target: Int32) throws -> Int32 {
            switch output {
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0)
                return -1
            case .file(let file, let append):
                let fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0o644)
                guard fd >= 0 else { throw ChildProcessError("cannot open \(file): \(String(cString: strerror(errno)))") }
                toClose.append(fd)
                posix_spawn_file_actions_adddup2(&actions, fd, target)
                return -1
            case .pipe:
                var fds: [Int32] = [-1, -1]
                // (pipe2 is not imported; the gap before FD_CLOEXEC does not matter, as
                // children started here get nothing beyond 0, 1 and 2 anyway.)
                guard pipe(&fds) == 0 else { throw ChildProcessError("cannot make a pipe: \(String(cString: strerror(errno)))") }
                for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
                toClose.append(fds[1])
                posix_spawn_file_actions_adddup2(&actions, fds[1], target)
                return fds[0]
            }
        }

        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let readEnd = try redirect(stdout, as: 1)
        do {
            if case .pipe = stderr { throw ChildProcessError("stderr cannot be a pipe") }
            _ = try redirect(stderr, as: 2)
        } catch {
            if readEnd >= 0 { close(readEnd) }
            throw error
        }
        // Descriptors opened elsewhere without close-on-exec (sockets of other tests)
        // must not leak into the child either.
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var child: pid_t = 0
        let rc = posix_spawn(&child, path, &actions, nil, argv, envp)
        guard rc == 0 else {
            if readEnd >= 0 { close(readEnd) }
            throw ChildProcessError("cannot start \(path): \(String(cString: strerror(rc)))")
        }
        pid = child
        stdoutPipe = readEnd
    }

    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34+), which Swift's Glibc
    /// module does not import.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(nil /* RTLD_DEFAULT */, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    /// The test process's environment with `changes` applied (nil removes a variable).
    public static func environment(_ changes: [String: String?]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in changes { env[k] = v }
        return env
    }

    /// Reaps the child if it has exited. Call with the lock held.
    private func poll() -> Bool {
        if waitStatus != nil { return true }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { waitStatus = status; return true }
        return false
    }

    /// Whether the child has not exited yet.
    public var isRunning: Bool { lock.withLock { !poll() } }

    /// Sends `signal` unless the child has already been reaped (its PID may belong to
    /// someone else by then).
    public func signal(_ signal: Int32) {
        lock.withLock { if !poll() { _ = kill(pid, signal) } }
    }

    /// Waits until every thread of the child is stopped (after SIGSTOP: none is inside a
    /// system call any more, a flush included); false after `timeout` seconds.
    public func waitUntilStopped(timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            let states = tasks.compactMap { task -> Character? in
                guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")") else { return nil }
                // "pid (name) S ...": the state follows the name's closing parenthesis.
                return stat[stat.index(close, offsetBy: 2)...].first
            }
            if !states.isEmpty, states.allSatisfy({ $0 == "T" || $0 == "t" }) { return true }
            usleep(1000)
        }
        return false
    }

    /// Waits for the child to exit.
    public func wait() {
        lock.withLock {
            while waitStatus == nil {
                var status: Int32 = 0
                let r = waitpid(pid, &status, 0)
                if r == pid { waitStatus = status } else if r < 0 && errno != EINTR { waitStatus = -1 }
            }
        }
    }

    /// Waits up to `timeout` seconds for the child to exit; whether it did.
    public func wait(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if !isRunning { return true }
            if Date() >= deadline { return false }
            usleep(10_000)
        }
    }

    /// Whether the child exited on its own (not by a signal). Only after it exited.
    public var exitedNormally: Bool { lock.withLock { (waitStatus ?? 0) & 0x7f == 0 } }

    /// The exit code, or the signal that ended it (as Foundation's `terminationStatus`).
    public var terminationStatus: Int32 {
        lock.withLock {
            let s = waitStatus ?? 0
            return s & 0x7f == 0 ? (s >> 8) & 0xff : s & 0x7f
        }
    }

    deinit {
        if poll() == false {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        if stdoutPipe >= 0 { close(stdoutPipe) }
    }
}

/// Starting a child process failed.
public struct ChildProcessError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
