public import TallyConfig

/// Every problem found in a pricing file (see ``ConfigError``).
public typealias PricingConfigError = ConfigError

/// One problem in a pricing file.
public typealias PricingConfigIssue = ConfigIssue
