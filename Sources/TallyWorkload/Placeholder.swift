// The reference workload arrives in Generator.swift.
