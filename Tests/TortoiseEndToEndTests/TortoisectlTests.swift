import Foundation
import Testing
import TortoiseClient
import TortoiseProtocol

/// tortoisectl: output a person reads, JSON for scripts, guards and exit statuses.
@Suite(.serialized) struct TortoisectlTests {
    func ctl(_ broker: BrokerProcess, _ args: String...) throws -> Tool {
        try Tool.run("tortoisectl", args, port: broker.port)
    }

    /// Three failed tasks: two timeouts on `mail`, one crash on `img`.
    func seed(_ broker: BrokerProcess) throws {
        let p = try broker.client()
        let w = try broker.client()
        _ = try p.put("mail", "to: ann")
        _ = try p.put("mail", "to: bob")
        _ = try p.put("img", "cat.png")
        #expect(try w.call("SUB mail") == .ok([]))
        #expect(try w.call("SUB img") == .ok([]))
        for _ in 0..<3 {
            let m = try w.message()
            let e = m.queue == "img" ? "decoder crashed" : "SMTP timeout after \(m.id)s"
            #expect(try w.call("NACK \(m.id) \(e.utf8.count)\r\n\(e)") == .ok([]))
        }
        w.send("QUIT\r\n")
    }

    @Test func putStatsAndFailedForPeopleAndScripts() throws {
        let broker = try BrokerProcess()
        let put = try ctl(broker, "put", "reports", "weekly")
        #expect(put.status == 0 && put.stdout == "1\n")
        try seed(broker)
        let stats = try ctl(broker, "stats")
        #expect(stats.status == 0)
        let lines = stats.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("QUEUE") == true)
        #expect(lines.contains { $0.hasPrefix("mail ") && $0.hasSuffix("2        0") })
        #expect(lines.contains { $0.hasPrefix("reports") })
        let json = try ctl(broker, "stats", "--json")
        let decoded = try JSONDecoder().decode(StatsReply.self, from: Data(json.stdout.utf8))
        #expect(decoded.queues["reports"]?.ready == 1 && decoded.queues["mail"]?.failed == 2)

        let failed = try ctl(broker, "failed", "smtp", "queue:mail", "--limit", "1")
        #expect(failed.status == 0)
        #expect(failed.stdout.contains("SMTP timeout after"))
        #expect(failed.stdout.contains("s ago"))
        #expect(failed.stdout.contains("1 of 2 failed tasks"))
        #expect(!failed.stdout.contains("decoder"))
        let failedJSON = try ctl(broker, "failed", "--json")
        let page = try JSONDecoder().decode(FailedReply.self, from: Data(failedJSON.stdout.utf8))
        #expect(page.total == 3)

        let errors = try ctl(broker, "errors")
        #expect(errors.status == 0)
        let rows = errors.stdout.split(separator: "\n")
        #expect(rows.count == 3 && rows[1].contains(" 2 ") && rows[1].contains("mail") && rows[2].contains("decoder crashed"))
        #expect(try ctl(broker, "failed", "nothing-matches").stdout.contains("no failed tasks match"))
    }

    @Test func replayAndDeleteAreGuardedAndCanBeTriedDry() throws {
        let broker = try BrokerProcess()
        try seed(broker)
        let refused = try ctl(broker, "replay")
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("--all"))
        #expect(try ctl(broker, "delete").status == 2)

        let dry = try ctl(broker, "replay", "timeout", "--dry-run")
        #expect(dry.status == 0)
        #expect(dry.stdout.contains("would replay 2 tasks"))
        #expect(dry.stdout.contains("SMTP timeout"))
        #expect(try broker.client().failed().total == 3, "a dry run changes nothing")

        let replay = try ctl(broker, "replay", "timeout")
        #expect(replay.status == 0 && replay.stdout == "replayed 2 tasks\n")
        #expect(try broker.client().stats().queues["mail"]?.ready == 2)

        let dryDelete = try ctl(broker, "delete", "--all", "--dry-run")
        #expect(dryDelete.stdout.contains("would delete 1 task"))
        let delete = try ctl(broker, "delete", "--all")
        #expect(delete.status == 0 && delete.stdout == "deleted 1 tasks\n")
        #expect(try broker.client().failed().total == 0)
    }

    @Test func exitStatusesAndEnvironment() throws {
        let broker = try BrokerProcess(environment: ["TORTOISE_TOKEN": "tok"])
        // Wrong or missing token: the broker answered an error.
        let noToken = try ctl(broker, "stats")
        #expect(noToken.status == 1)
        #expect(noToken.stderr.contains("NOAUTH"))
        let withEnv = try Tool.run("tortoisectl", ["stats"], port: broker.port, environment: ["TORTOISE_TOKEN": "tok"])
        #expect(withEnv.status == 0)
        let withFlag = try Tool.run("tortoisectl", ["--token", "tok", "--host", "127.0.0.1", "--port", String(broker.port), "put", "q", "x"])
        #expect(withFlag.status == 0 && withFlag.stdout == "1\n")
        // A malformed query: the broker's error, status 1.
        let bad = try Tool.run("tortoisectl", ["failed", "since:soon"], port: broker.port, environment: ["TORTOISE_TOKEN": "tok"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("since"))
        // Bad usage: 2.
        #expect(try ctl(broker, "frobnicate").status == 2)
        #expect(try ctl(broker, "failed", "--limit", "x").status == 2)
        // Nobody listening: 3.
        let down = try Tool.run("tortoisectl", ["--port", "1", "stats"])
        #expect(down.status == 3)
        #expect(down.stderr.contains("cannot reach the broker"))
        // Help with examples, and completion scripts.
        let help = try Tool.run("tortoisectl", ["--help"])
        #expect(help.status == 0 && help.stdout.contains("Examples:") && help.stdout.contains("replay"))
        let completion = try Tool.run("tortoisectl", ["--generate-completion-script", "bash"])
        #expect(completion.status == 0 && completion.stdout.contains("tortoisectl"))
    }
}

/// The original story, end to end, with the real example binaries.
@Suite(.serialized) struct StoryTests {
    @Test func nightmaresFoodAndReplay() throws {
        let broker = try BrokerProcess()
        let w1 = try Background("worker", port: broker.port)
        let w2 = try Background("worker", port: broker.port)
        #expect(w1.waitFor("Waiting for tasks") && w2.waitFor("Waiting for tasks"))
        Thread.sleep(forTimeInterval: 0.3)
        for message in ["hello", ".first", "..work", "work."] {
            let r = try Tool.run("new-task", [message], port: broker.port)
            #expect(r.status == 0 && r.stdout.contains("Sent '\(message)'"))
        }
        let deadline = Date().addingTimeInterval(20)
        var failed = try Tool.run("tortoisectl", ["failed", "nightmare"], port: broker.port)
        while !failed.stdout.contains("2 of 2") && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.2)
            failed = try Tool.run("tortoisectl", ["failed", "nightmare"], port: broker.port)
        }
        #expect(failed.stdout.contains("..work") && failed.stdout.contains("work."))
        // Both workers get food (the longest idle gets each), then the replay.
        _ = try Tool.run("new-task", ["food"], port: broker.port)
        _ = try Tool.run("new-task", ["food"], port: broker.port)
        #expect(w1.waitFor("Done", count: 2) || w2.waitFor("Done", count: 2))
        Thread.sleep(forTimeInterval: 0.5)
        let replay = try Tool.run("tortoisectl", ["replay", "nightmare"], port: broker.port)
        #expect(replay.stdout == "replayed 2 tasks\n")
        let done = Date().addingTimeInterval(20)
        while (w1.output + w2.output).components(separatedBy: "Done").count - 1 < 6 && Date() < done {
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect((w1.output + w2.output).components(separatedBy: "Done").count - 1 == 6)
        #expect(try Tool.run("tortoisectl", ["failed"], port: broker.port).stdout.contains("no failed tasks match"))
        #expect(w1.interrupt() == 0 && w2.interrupt() == 0)
    }
}
