extension UsageEvent {
    /// The event as one line of Tally-shaped JSON (no trailing newline), with the canonical
    /// spellings of the quantity and the timestamp. Decoding it gives back an equal event.
    public var jsonLine: String {
        var out = "{\"tenant\":" + JSONWriter.quoted(tenant)
        out += ",\"metric\":" + JSONWriter.quoted(metric)
        out += ",\"quantity\":" + quantity.description
        out += ",\"timestamp\":\"" + timestamp.description + "\""
        if let id { out += ",\"id\":" + JSONWriter.quoted(id) }
        if !properties.isEmpty {
            out += ",\"properties\":{"
            out += properties.map { JSONWriter.quoted($0.key) + ":" + JSONWriter.quoted($0.value) }.joined(separator: ",")
            out += "}"
        }
        return out + "}"
    }
}
