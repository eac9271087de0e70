import Foundation
import Testing

/// The crash-torture tool in its short mode: SIGKILL under load, restart, and the checks
/// of everything the clients were told.
@Suite(.serialized) struct TortureTests {
    @Test func shortCrashTortureFindsNoProblem() throws {
        // With --compact-from 1 and --compact-check 0.1, the broker also compacts its file
        // at restarts and every tenth of a second while it runs (whenever it has grown past
        // 1 MiB and at most half is live): compactions under SIGKILL too.
        let r = try Tool.run("tortoise-torture", ["--short", "--tortoised", BrokerProcess.binary("tortoised"),
                                                  "--compact-from", "1", "--compact-check", "0.1"],
                             timeout: 180)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr.suffix(2000))")
        #expect(r.stdout.contains("crash cycles survived: 8"))
        #expect(r.stdout.contains("0 problems"))
    }

    @Test func connectionsThatNeverAuthenticateAreClosed() throws {
        // The authenticated client connects first, so a loaded machine cannot delay its
        // AUTH past the timeout that the idle one runs into.
        let broker = try BrokerProcess(arguments: ["--auth-timeout", "2"], environment: ["TORTOISE_TOKEN": "t"])
        let ok = try broker.client()
        #expect(try ok.call("AUTH t") == .ok([]))
        let idle = try broker.client()
        let f = try idle.frame(timeout: 10)
        #expect(f.errorCode == "NOAUTH")
        #expect(try idle.waitForClose())
        // Well past the timeout, the authenticated connection is still served.
        #expect(try ok.call("PING") == .ok(["PONG"]))
    }
}
