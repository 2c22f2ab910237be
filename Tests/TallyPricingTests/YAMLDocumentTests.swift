import Testing
import TallyConfig

/// The YAML tree every config file is read through (libyaml's events, TallyConfig's YAMLNode).
@Suite("YAML documents")
struct YAMLDocumentTests {
    func compose(_ text: String) -> Result<YAMLNode?, YAMLSyntaxError> {
        do throws(YAMLSyntaxError) {
            return .success(try YAMLNode.compose(text))
        } catch {
            return .failure(error)
        }
    }

    func problem(_ text: String) -> YAMLSyntaxError? {
        if case .failure(let error) = compose(text) { return error }
        return nil
    }

    @Test func blockAndFlowCollectionsKeepTheirTextStyleAndPlace() throws {
        let text = """
            # a comment
            name: "quoted: text"
            plain: 0.001
            empty:
            list: [a, 'b c', 3]
            nested:
              - key: value
                other: |
                  two
                  lines
            """
        let root = try #require(try compose(text).get())
        let pairs = try #require(root.mapping)
        #expect(pairs.map { $0.key.scalar?.string } == ["name", "plain", "empty", "list", "nested"])
        #expect(pairs[0].value.scalar?.string == "quoted: text")
        #expect(pairs[0].value.scalar?.style == .doubleQuoted)
        #expect(pairs[1].value.scalar?.string == "0.001")
        #expect(pairs[1].value.scalar?.style == .plain)
        #expect(pairs[1].value.mark == YAMLNode.Mark(line: 3, column: 8))
        #expect(pairs[2].value.scalar?.string == "")
        #expect(pairs[3].value.sequence?.map { $0.scalar?.string } == ["a", "b c", "3"])
        #expect(pairs[3].value.sequence?[1].scalar?.style == .singleQuoted)
        let item = try #require(pairs[4].value.sequence?.first?.mapping)
        #expect(item[1].value.scalar?.string == "two\nlines")
        #expect(item[1].value.scalar?.style == .literal)
        #expect(item[0].key.mark == YAMLNode.Mark(line: 7, column: 5))
    }

    @Test func anAliasIsACopyOfWhatItsAnchorNames() throws {
        let root = try #require(try compose("base: &b {unit_price: '0.5'}\nother: *b\n").get())
        let pairs = try #require(root.mapping)
        #expect(pairs[1].value.mapping?.first?.value.scalar?.string == "0.5")
    }

    @Test func noDocumentIsNil() throws {
        #expect(try compose("").get() == nil)
        #expect(try compose("# only a comment\n").get() == nil)
    }

    @Test func badDocumentsAreRefusedWithTheirPlace() throws {
        let unclosed = try #require(problem("plans: [\n"))
        #expect(unclosed.line == 2)
        let twice = try #require(problem("a: 1\n---\nb: 2\n"))
        #expect(twice.problem == "expected one YAML document, found a second")
        #expect(twice.line == 2)
        #expect(try #require(problem("a: *nowhere\n")).problem == "unknown alias")
    }

    @Test func nestingIsBoundedBeforeItCanExhaustTheStack() throws {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(try #require(problem(deep)).problem == "nested deeper than \(YAMLNode.maxDepth) levels")
        let allowed = String(repeating: "[", count: YAMLNode.maxDepth) + String(repeating: "]", count: YAMLNode.maxDepth)
        #expect(problem(allowed) == nil)
    }

    @Test func nestedAliasesCannotExpandWithoutBound() throws {
        // "Billion laughs": each level names the previous one ten times.
        var text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...9 {
            let previous = "*a\(level - 1)"
            text += "a\(level): &a\(level) [" + Array(repeating: previous, count: 10).joined(separator: ", ") + "]\n"
        }
        #expect(try #require(problem(text)).problem.hasPrefix("more than \(YAMLNode.maxNodes) values"))
    }

    @Test func aKeyGivenTwiceIsAnIssueAtItsSecondPlace() throws {
        let root = try #require(try compose("listen: a\nspool: b\nlisten: c\n").get())
        var reader = YAMLReader()
        let read = reader.mapping(root, "", allowed: ["listen", "spool"])
        let fields = try #require(read)
        #expect(fields["listen"]?.scalar?.string == "a")
        #expect(reader.issues.count == 1)
        #expect(reader.issues.first?.place == "listen")
        #expect(reader.issues.first?.problem == "'listen' is given twice")
        #expect(reader.issues.first?.line == 3)
    }

    @Test func aConfigFileNamesTheLineOfItsSyntaxError() {
        do throws(ConfigError) {
            _ = try ConfigDocument.compose("plans:\n  - id: [p\n", file: "pricing.yaml")
            Issue.record("a syntax error was accepted")
        } catch {
            #expect(error.issues.first?.problem.hasPrefix("not valid YAML: ") == true)
            #expect(error.issues.first?.line != nil)
        }
    }
}
