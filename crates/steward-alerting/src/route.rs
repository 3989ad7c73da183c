//! The routing tree, with Alertmanager's semantics: an alert enters at the root, descends into
//! the first child whose matchers match (and into later siblings too while the matched child
//! says `continue`), and ends at the deepest matching nodes; a node no child took is itself the
//! destination. Unset settings inherit from the parent.

use std::time::Duration;

use steward_core::alerting::RouteConfig;

use crate::{
    matchers::{all_match, parse_list, Matcher},
    model::Labels,
    ConfigError,
};

/// How a route splits alerts into groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    Labels(Vec<String>),
    /// `["..."]`: one group per distinct label set.
    All,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the tree (`0`, `0.1`, `0.1.0`): part of every group key.
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub receiver: String,
    pub group_by: GroupBy,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub continue_matching: bool,
    pub routes: Vec<Route>,
}

impl Route {
    /// Compiles the tree; `receivers` are the configured names, to catch typos.
    pub fn compile(cfg: &RouteConfig, receivers: &[String]) -> Result<Route, ConfigError> {
        let root = Route {
            id: String::new(),
            matchers: Vec::new(),
            receiver: String::new(),
            group_by: GroupBy::Labels(Vec::new()),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            continue_matching: false,
            routes: Vec::new(),
        };
        let r = Self::node(cfg, &root, "0", "alerting.route", receivers)?;
        if r.receiver.is_empty() {
            return Err(ConfigError::new(
                "alerting.route.receiver",
                "the root route needs a receiver (the default destination)",
            ));
        }
        Ok(r)
    }

    fn node(
        cfg: &RouteConfig,
        parent: &Route,
        id: &str,
        key: &str,
        receivers: &[String],
    ) -> Result<Route, ConfigError> {
        let matchers = parse_list(&cfg.matchers)
            .map_err(|e| ConfigError::new(format!("{key}.matchers"), e.to_string()))?;
        let receiver = cfg.receiver.clone().unwrap_or(parent.receiver.clone());
        if !receiver.is_empty() && !receivers.contains(&receiver) {
            return Err(ConfigError::new(
                format!("{key}.receiver"),
                format!(
                    "no receiver is named {receiver:?}; add [[alerting.receivers]] name = {receiver:?} (known: {})",
                    receivers.join(", ")
                ),
            ));
        }
        let group_by = match &cfg.group_by {
            None => parent.group_by.clone(),
            Some(v) if v.iter().any(|x| x == "...") => GroupBy::All,
            Some(v) => GroupBy::Labels(v.clone()),
        };
        let mut route = Route {
            id: id.to_string(),
            matchers,
            receiver,
            group_by,
            group_wait: cfg.group_wait.unwrap_or(parent.group_wait),
            group_interval: cfg.group_interval.unwrap_or(parent.group_interval),
            repeat_interval: cfg.repeat_interval.unwrap_or(parent.repeat_interval),
            continue_matching: cfg.continue_matching,
            routes: Vec::new(),
        };
        if route.group_interval.is_zero() {
            return Err(ConfigError::new(
                format!("{key}.group_interval"),
                "group_interval must be above 0 (e.g. \"5m\")",
            ));
        }
        for (i, child) in cfg.routes.iter().enumerate() {
            let c = Self::node(
                child,
                &route,
                &format!("{id}.{i}"),
                &format!("{key}.routes[{i}]"),
                receivers,
            )?;
            route.routes.push(c);
        }
        Ok(route)
    }

    /// The routes an alert with `labels` goes to (at least the root).
    pub fn matching(&self, labels: &Labels) -> Vec<&Route> {
        let mut out = Vec::new();
        self.collect(labels, &mut out);
        if out.is_empty() {
            out.push(self);
        }
        out
    }

    fn collect<'a>(&'a self, labels: &Labels, out: &mut Vec<&'a Route>) -> bool {
        if !all_match(&self.matchers, labels) {
            return false;
        }
        let mut any = false;
        for child in &self.routes {
            if child.collect(labels, out) {
                any = true;
                if !child.continue_matching {
                    break;
                }
            }
        }
        if !any {
            out.push(self);
        }
        true
    }

    /// The group labels of `labels` under this route.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }

    /// Every route, depth first.
    pub fn walk(&self) -> Vec<&Route> {
        let mut out = vec![self];
        for c in &self.routes {
            out.extend(c.walk());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> RouteConfig {
        toml::from_str(text).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn first_match_wins_unless_continue() {
        let rx: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let r = Route::compile(
            &cfg(r#"
receiver = "a"
group_wait = "1s"
[[routes]]
matchers = ['severity="critical"']
receiver = "b"
continue = true
[[routes]]
matchers = ['service=~"db|api"']
receiver = "c"
  [[routes.routes]]
  matchers = ['team="x"']
  receiver = "d"
  group_wait = "5s"
"#),
            &rx,
        )
        .unwrap();
        let names = |l: &Labels| -> Vec<String> {
            r.matching(l).iter().map(|r| r.receiver.clone()).collect()
        };
        assert_eq!(
            names(&labels(&[("severity", "critical"), ("service", "db")])),
            ["b", "c"]
        );
        assert_eq!(names(&labels(&[("service", "api"), ("team", "x")])), ["d"]);
        assert_eq!(names(&labels(&[("service", "web")])), ["a"]);
        let d = r.matching(&labels(&[("service", "api"), ("team", "x")]))[0];
        assert_eq!(d.group_wait, Duration::from_secs(5));
        assert_eq!(d.id, "0.1.0");
        let c = r.matching(&labels(&[("service", "api")]))[0];
        assert_eq!(c.group_wait, Duration::from_secs(1), "inherited");
    }

    #[test]
    fn unknown_receivers_are_config_errors() {
        let e = Route::compile(&cfg("receiver = \"nope\""), &["a".into()]).unwrap_err();
        assert_eq!(e.key, "alerting.route.receiver");
        assert!(e.message.contains("nope"), "{e}");
    }
}
