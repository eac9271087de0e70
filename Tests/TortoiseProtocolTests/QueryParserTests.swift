import Testing
import TortoiseProtocol
import TortoiseStorage

/// Every term and error of the query language.
@Suite struct QueryParserTests {
    let now: Millis = 1_800_000_000_000

    func q(_ text: String) throws -> FailedQuery { try QueryParser.parse(text, now: now).get() }

    func err(_ text: String) -> String? {
        if case .failure(let e) = QueryParser.parse(text, now: now) {
            #expect(e.code == .badArgument)
            return e.message
        }
        return nil
    }

    @Test func everyTerm() throws {
        #expect(try q("") == FailedQuery())
        #expect(try q("   ").isEmpty)
        #expect(try q("Timeout SMTP").words == ["timeout", "smtp"])
        #expect(try q("\"Connection Refused\"").phrases == ["connection refused"])
        #expect(try q("\"say \\\"hi\\\"\"").phrases == ["say \"hi\""])
        #expect(try q("queue:emails queue:sms").queues == ["emails", "sms"])
        #expect(try q("id:42").ids == [42])
        #expect(try q("since:90s").since == now - 90_000)
        #expect(try q("since:30m").since == now - 1_800_000)
        #expect(try q("before:2h").before == now - 7_200_000)
        #expect(try q("since:7d").since == now - 7 * 86_400_000)
        #expect(try q("since:2026-11-29T03:55:27Z").since == 1_795_924_527_000)
        #expect(try q("before:2026-11-29T04:55:27.5+01:00").before == 1_795_924_527_500)
        #expect(try q("payload:Bob").payloadTexts == ["bob"])
        #expect(try q("payload:\"to: Bob\"").payloadTexts == ["to: bob"])
        #expect(try q("group:00AB00cd00ef0012").groups == [0x00ab_00cd_00ef_0012])
        let mixed = try q("smtp queue:mail since:1h \"after 30s\" payload:x")
        #expect(mixed.words == ["smtp"] && mixed.queues == ["mail"] && mixed.phrases == ["after 30s"] && mixed.payloadTexts == ["x"])
    }

    @Test func wordsWithPunctuationMeanTheirWordsAndTheExactText() throws {
        let t = try q("time-out")
        #expect(t.words == ["time", "out"] && t.phrases == ["time-out"])
        let u = try q("Ünïcödé_Wörd")
        #expect(u.words == ["ünïcödé_wörd"] && u.phrases.isEmpty)
    }

    @Test func errorsSayWhereAndWhat() {
        #expect(err("since:3weeks")?.contains("character 7: since: '3weeks' is neither") == true)
        #expect(err("smtp before:yesterday")?.contains("character 13") == true)
        #expect(err("\"open")?.contains("unclosed quote") == true)
        #expect(err("payload:\"open")?.contains("unclosed quote") == true)
        #expect(err("colour:red")?.contains("unknown field 'colour'") == true)
        #expect(err("queue:")?.contains("needs a value") == true)
        #expect(err("queue:a/b")?.contains("not a valid queue name") == true)
        #expect(err("id:x1")?.contains("not a task id") == true)
        #expect(err("group:123")?.contains("16 hex digits") == true)
        #expect(err("\"\"")?.contains("empty phrase") == true)
        #expect(err("ab\"cd\"")?.contains("quote") == true)
    }

    @Test func timesFormatAndParseBack() {
        for ms: Millis in [0, 1_795_924_527_000, 1_795_924_527_123, 946_684_799_999] {
            let text = WireTime.format(ms)
            #expect(WireTime.parse(text) == ms, "\(text)")
        }
        #expect(WireTime.format(1_795_924_527_007) == "2026-11-29T03:55:27.007Z")
        #expect(WireTime.parse("2026-13-01T00:00:00Z") == nil)
        #expect(WireTime.parse("2026-11-29") == nil)
        #expect(WireTime.parseDuration("10x") == nil)
        #expect(WireTime.parseDuration("s") == nil)
    }
}
