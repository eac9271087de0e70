import Foundation
import Testing
import TortoiseTestSupport

/// The test harness's own child processes: a child sees none of the test process's
/// descriptors (a leaked pipe end once kept another test waiting for an end-of-file that
/// never came), and exit statuses and signals read as Foundation's did.
@Suite struct ChildProcessTests {
    @Test func aChildGetsOnlyStdinStdoutAndStderr() throws {
        var leaked: [Int32] = [-1, -1]
        #expect(pipe(&leaked) == 0) // deliberately not close-on-exec
        defer { for fd in leaked { close(fd) } }
        let p = try ChildProcess("/bin/sh", ["-c", "ls /proc/$$/fd"], environment: [:], stdout: .pipe)
        p.wait()
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(p.stdoutPipe, &chunk, chunk.count)
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        let fds = String(decoding: out, as: UTF8.self).split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
        #expect(p.terminationStatus == 0)
        #expect(fds.contains(1))
        #expect(!fds.contains(leaked[0]) && !fds.contains(leaked[1]), "\(fds) includes \(leaked)")
        #expect(fds.allSatisfy { $0 <= 2 || $0 >= 10 }, "\(fds)") // sh keeps its own copies at 10 and up
    }

    @Test func exitCodesAndSignalsAreReported() throws {
        let exits = try ChildProcess("/bin/sh", ["-c", "exit 3"], environment: [:])
        exits.wait()
        #expect(exits.exitedNormally && exits.terminationStatus == 3)
        let sleeper = try ChildProcess("/bin/sleep", ["30"], environment: [:])
        #expect(sleeper.isRunning)
        sleeper.signal(SIGKILL)
        #expect(sleeper.wait(timeout: 10))
        #expect(!sleeper.exitedNormally && sleeper.terminationStatus == SIGKILL)
        sleeper.signal(SIGKILL) // reaped: nothing is sent to a PID that may be someone else's now
    }
}
