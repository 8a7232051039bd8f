"""The outbox: consent updates (opt-outs first) pushed to İYS; rules, store, push, settlement, approval, deadline watch."""
