import TallyConfig
import TallyCore

extension YAMLReader {
    mutating func price(_ node: YAMLNode, _ place: String) -> UnitPrice? {
        guard let value = text(node, place) else { return nil }
        do throws(DecimalTextError) {
            let price = try UnitPrice(parsing: value)
            if price.picos < 0 {
                fail(place, node, "must not be negative (got \(value))")
                return nil
            }
            return price
        } catch {
            fail(place, node, error.description)
            return nil
        }
    }

    mutating func money(_ node: YAMLNode, _ place: String, currency: Currency?) -> Money? {
        guard let value = text(node, place), let currency else { return nil }
        do throws(DecimalTextError) {
            let money = try Money(currency: currency, parsing: value)
            if money.scaledAmount < 0 {
                fail(place, node, "must not be negative (got \(value))")
                return nil
            }
            return money
        } catch {
            fail(place, node, error.description)
            return nil
        }
    }

}
