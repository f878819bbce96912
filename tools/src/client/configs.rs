//! Topic and broker configs: DescribeConfigs and IncrementalAlterConfigs.

use anyhow::bail;
use engine::protocol::kafka_protocol::messages::{
    describe_configs_request::DescribeConfigsResource,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    DescribeConfigsRequest, IncrementalAlterConfigsRequest,
};

use super::{error_text, str, Client};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: &'static str,
    pub read_only: bool,
    pub sensitive: bool,
}

fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

fn resource_label(resource_type: i8, name: &str) -> String {
    match resource_type {
        RESOURCE_TOPIC => format!("topic '{name}'"),
        RESOURCE_BROKER => format!("broker {name}"),
        _ => format!("resource {name}"),
    }
}

/// One config change of IncrementalAlterConfigs.
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

impl Client {
    /// Configs of one resource (keys None: all), sent to `node` (a broker
    /// resource must be asked of that broker) or to any broker.
    pub fn describe_configs(
        &mut self,
        node: Option<i32>,
        resource_type: i8,
        name: &str,
        keys: Option<&[String]>,
    ) -> anyhow::Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(str(name))
                .with_configuration_keys(keys.map(|ks| ks.iter().map(|k| str(k)).collect())),
        ]);
        let response = match node {
            Some(node) => self.send_to(node, &request)?,
            None => self.send_any(&request)?,
        };
        let Some(result) = response.results.first() else {
            bail!("DescribeConfigs answered no result");
        };
        if result.error_code != 0 {
            let hint = if result.error_code == 3 {
                " — see `gregor topic list`"
            } else {
                ""
            };
            bail!(
                "cannot describe the configs of {}: {}{hint}",
                resource_label(resource_type, name),
                error_text(result.error_code, result.error_message.as_ref())
            );
        }
        let mut entries: Vec<ConfigEntry> = result
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                source: source_name(c.config_source),
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    pub fn alter_configs(
        &mut self,
        node: Option<i32>,
        resource_type: i8,
        name: &str,
        changes: &[ConfigChange],
    ) -> anyhow::Result<()> {
        let configs = changes
            .iter()
            .map(|c| match c {
                ConfigChange::Set(k, v) => AlterableConfig::default()
                    .with_name(str(k))
                    .with_config_operation(0)
                    .with_value(Some(str(v))),
                ConfigChange::Delete(k) => AlterableConfig::default()
                    .with_name(str(k))
                    .with_config_operation(1),
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(str(name))
                .with_configs(configs),
        ]);
        let response = match node {
            Some(node) => self.send_to(node, &request)?,
            None => self.send_any(&request)?,
        };
        let Some(result) = response.responses.first() else {
            bail!("IncrementalAlterConfigs answered no result");
        };
        if result.error_code != 0 {
            let hint = match (result.error_code, resource_type) {
                (3, _) => " — see `gregor topic list`",
                (40, _) => {
                    " — check the key and value (Kafka's config names, e.g. retention.ms=86400000)"
                }
                (42, RESOURCE_BROKER) => {
                    " — set broker configs in `gregor serve --config FILE` and restart"
                }
                _ => "",
            };
            bail!(
                "cannot alter the configs of {}: {}{hint}",
                resource_label(resource_type, name),
                error_text(result.error_code, result.error_message.as_ref())
            );
        }
        Ok(())
    }
}
