//! `gregor group list|describe|delete|seek`.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Subcommand;
use engine::protocol::kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
};
use serde_json::json;

use super::{print_json, print_table, resolve_start, Context, StartAt};
use crate::client::group::{commit_offsets, committed_offsets, decode_assignment, Assignment};
use crate::client::{error_name, error_text, str, Client};

const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Members, assignments, committed offsets and lag of a group.
    Describe { group: String },
    /// Delete a group (it must have no active members).
    Delete { group: String },
    /// Move a group's committed offsets (it must have no active members).
    Seek {
        group: String,
        /// beginning, end, an offset (negative: from the end) or @timestamp-ms.
        #[arg(long, allow_hyphen_values = true)]
        to: StartAt,
        #[arg(short = 't', long)]
        topic: String,
        /// Only these partitions; repeatable.
        #[arg(short = 'p', long = "partition")]
        partitions: Vec<i32>,
    },
}

pub fn run(ctx: &Context, command: GroupCommand) -> anyhow::Result<()> {
    let json = ctx.json()?;
    let mut client = ctx.client()?;
    match command {
        GroupCommand::List => list(&mut client, json),
        GroupCommand::Describe { group } => describe(&mut client, json, &group),
        GroupCommand::Delete { group } => delete(&mut client, json, &group),
        GroupCommand::Seek {
            group,
            to,
            topic,
            partitions,
        } => seek(&mut client, json, &group, to, &topic, &partitions),
    }
}

fn list(client: &mut Client, json: bool) -> anyhow::Result<()> {
    client.metadata(Some(&[]))?;
    let nodes: Vec<i32> = client.brokers.keys().copied().collect();
    let mut groups = Vec::new();
    for node in nodes {
        let response = client.send_to(node, &ListGroupsRequest::default())?;
        if response.error_code != 0 {
            bail!(
                "cannot list the groups of broker {node}: {}",
                error_name(response.error_code)
            );
        }
        for g in &response.groups {
            groups.push((
                g.group_id.0.to_string(),
                g.protocol_type.to_string(),
                g.group_state.to_string(),
            ));
        }
    }
    groups.sort();
    groups.dedup();
    if json {
        print_json(&json!(groups
            .iter()
            .map(|(g, p, s)| json!({"group": g, "protocol_type": p, "state": s}))
            .collect::<Vec<_>>()));
    } else {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|(g, p, s)| vec![g.clone(), p.clone(), s.clone()])
            .collect();
        print_table(&["group", "protocol-type", "state"], &rows);
    }
    Ok(())
}

struct Described {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<(String, String, String, Assignment)>,
}

fn describe_group(client: &mut Client, coordinator: i32, group: &str) -> anyhow::Result<Described> {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(str(group))]);
    let response = client.send_to(coordinator, &request)?;
    let Some(g) = response.groups.first() else {
        bail!("DescribeGroups answered no group");
    };
    if g.error_code == GROUP_ID_NOT_FOUND {
        bail!("group '{group}' does not exist — see `gregor group list`");
    }
    if g.error_code != 0 {
        bail!(
            "cannot describe group '{group}': {}",
            error_text(g.error_code, g.error_message.as_ref())
        );
    }
    let consumer = g.protocol_type.as_str() == "consumer";
    Ok(Described {
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members: g
            .members
            .iter()
            .map(|m| {
                let assignment = if consumer {
                    decode_assignment(m.member_assignment.clone()).unwrap_or_default()
                } else {
                    Assignment::new()
                };
                (
                    m.member_id.to_string(),
                    m.client_id.to_string(),
                    m.client_host.to_string(),
                    assignment,
                )
            })
            .collect(),
    })
}

fn describe(client: &mut Client, json: bool, group: &str) -> anyhow::Result<()> {
    let coordinator = client.coordinator(group)?;
    let described = describe_group(client, coordinator, group)?;
    let committed = committed_offsets(client, coordinator, group, None)?;
    if described.state == "Dead" && committed.is_empty() {
        bail!("group '{group}' does not exist — see `gregor group list`");
    }
    // Lag = latest offset - committed offset, per committed partition.
    let mut offsets = Vec::new();
    for (topic, parts) in &committed {
        let info = client.metadata(Some(&[topic.as_str()]))?;
        let ends = match info
            .into_iter()
            .find(|t| &t.name == topic && t.error_code == 0)
        {
            Some(info) => {
                let queries: Vec<(i32, i64)> = parts
                    .keys()
                    .filter(|p| info.partitions.iter().any(|i| i.partition == **p))
                    .map(|&p| (p, crate::client::OFFSET_LATEST))
                    .collect();
                client.list_offsets(&info, &queries)?
            }
            None => BTreeMap::new(),
        };
        for (&p, &offset) in parts {
            let end = ends.get(&p).copied();
            let owner = described
                .members
                .iter()
                .find(|m| m.3.get(topic).is_some_and(|ps| ps.contains(&p)))
                .map(|m| m.0.clone());
            offsets.push((topic.clone(), p, offset, end, owner));
        }
    }
    if json {
        print_json(&json!({
            "group": group,
            "state": described.state,
            "protocol_type": described.protocol_type,
            "protocol": described.protocol,
            "coordinator": coordinator,
            "members": described.members.iter().map(|(id, client_id, host, a)| json!({
                "member_id": id,
                "client_id": client_id,
                "host": host,
                "assignment": a,
            })).collect::<Vec<_>>(),
            "offsets": offsets.iter().map(|(t, p, o, end, owner)| json!({
                "topic": t,
                "partition": p,
                "committed_offset": o,
                "log_end_offset": end,
                "lag": end.map(|e| (e - o).max(0)),
                "member_id": owner,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "group {group}: {} ({} member(s), protocol {}/{}, coordinator {coordinator})",
            described.state,
            described.members.len(),
            if described.protocol_type.is_empty() {
                "-"
            } else {
                &described.protocol_type
            },
            described.protocol
        );
        if !described.members.is_empty() {
            println!();
            let rows: Vec<Vec<String>> = described
                .members
                .iter()
                .map(|(id, client_id, host, a)| {
                    let assigned = a
                        .iter()
                        .map(|(t, ps)| {
                            let ps: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
                            format!("{t}:{}", ps.join(","))
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    vec![id.clone(), client_id.clone(), host.clone(), assigned]
                })
                .collect();
            print_table(&["member", "client-id", "host", "assignment"], &rows);
        }
        println!();
        let rows: Vec<Vec<String>> = offsets
            .iter()
            .map(|(t, p, o, end, owner)| {
                vec![
                    t.clone(),
                    p.to_string(),
                    o.to_string(),
                    end.map_or("-".into(), |e| e.to_string()),
                    end.map_or("-".into(), |e| (e - o).max(0).to_string()),
                    owner.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        print_table(
            &[
                "topic",
                "partition",
                "committed",
                "log-end",
                "lag",
                "member",
            ],
            &rows,
        );
    }
    Ok(())
}

fn delete(client: &mut Client, json: bool, group: &str) -> anyhow::Result<()> {
    let coordinator = client.coordinator(group)?;
    let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str(group))]);
    let response = client.send_to(coordinator, &request)?;
    let Some(result) = response.results.first() else {
        bail!("DeleteGroups answered no result");
    };
    match result.error_code {
        0 => {}
        GROUP_ID_NOT_FOUND => bail!("group '{group}' does not exist — see `gregor group list`"),
        NON_EMPTY_GROUP => bail!(
            "cannot delete group '{group}': NON_EMPTY_GROUP — it has active members; stop its consumers first"
        ),
        code => bail!("cannot delete group '{group}': {}", error_name(code)),
    }
    if json {
        print_json(&json!({ "group": group, "deleted": true }));
    } else {
        println!("deleted group {group}");
    }
    Ok(())
}

fn seek(
    client: &mut Client,
    json: bool,
    group: &str,
    to: StartAt,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<()> {
    let info = client.topic(topic)?;
    let partitions: Vec<i32> = if partitions.is_empty() {
        info.partitions.iter().map(|p| p.partition).collect()
    } else {
        for p in partitions {
            if !info.partitions.iter().any(|i| i.partition == *p) {
                bail!("topic '{topic}' has no partition {p}");
            }
        }
        partitions.to_vec()
    };
    let coordinator = client.coordinator(group)?;
    let described = describe_group(client, coordinator, group);
    if let Ok(d) = &described {
        if !d.members.is_empty() {
            bail!(
                "cannot seek group '{group}': it has {} active member(s) — stop its consumers first",
                d.members.len()
            );
        }
    }
    let offsets = resolve_start(client, &info, &partitions, to)?;
    commit_offsets(
        client,
        coordinator,
        group,
        -1,
        "",
        &[(topic.to_string(), offsets.clone())].into(),
    )?;
    if json {
        print_json(&json!({
            "group": group,
            "topic": topic,
            "offsets": offsets.iter().map(|(p, o)| json!({"partition": p, "offset": o})).collect::<Vec<_>>(),
        }));
    } else {
        let rows: Vec<Vec<String>> = offsets
            .iter()
            .map(|(p, o)| vec![topic.to_string(), p.to_string(), o.to_string()])
            .collect();
        print_table(&["topic", "partition", "offset"], &rows);
    }
    Ok(())
}
