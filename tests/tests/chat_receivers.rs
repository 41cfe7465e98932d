//! Slack, Discord and Telegram receivers with the real binary, against a local HTTP server
//! standing in for the services: a failing check pages each exactly once in the shape the
//! service documents (Slack `text`, Discord `content`, Telegram `sendMessage` with `chat_id`),
//! and its recovery once more. The Telegram bot token comes from the environment and never
//! shows in the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use labmesh_tests::receiver::{healthy_service, json_bodies, recording_server};
use labmesh_tests::{Agent, free_port, labmesh, run, wait_until};

#[test]
fn slack_discord_and_telegram_get_one_firing_and_one_resolved_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (recv, seen) = recording_server();
    let port = free_port();
    let config = format!(
        "[[check]]\nname = \"jellyfin\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\n\n\
         [alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\
         repeat_interval = \"1h\"\n\n\
         [[receiver]]\nkind = \"slack\"\nurl = \"http://{recv}/slack\"\n\n\
         [[receiver]]\nkind = \"discord\"\nurl = \"http://{recv}/discord\"\n\n\
         [[receiver]]\nkind = \"telegram\"\nserver = \"http://{recv}\"\n\
         token_env = \"LM_TEST_TG_TOKEN\"\nchat_id = 4242\n"
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let _agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path)
            .env("LM_TEST_TG_TOKEN", "123456:SECRET-token");
    });
    let telegram = "/bot123456:SECRET-token/sendMessage";
    let all = |min: usize| {
        json_bodies(&seen, Some("/slack")).len() >= min
            && json_bodies(&seen, Some("/discord")).len() >= min
            && json_bodies(&seen, Some(telegram)).len() >= min
    };
    wait_until("one firing message each", Duration::from_secs(30), || {
        all(1)
    });
    let slack = &json_bodies(&seen, Some("/slack"))[0];
    assert!(
        slack["text"].as_str().unwrap().contains("jellyfin"),
        "{slack}"
    );
    let discord = &json_bodies(&seen, Some("/discord"))[0];
    assert!(
        discord["content"].as_str().is_some_and(|c| !c.is_empty()),
        "{discord}"
    );
    assert!(discord.to_string().contains("jellyfin"), "{discord}");
    let tg = &json_bodies(&seen, Some(telegram))[0];
    assert_eq!(tg["chat_id"].to_string().trim_matches('"'), "4242", "{tg}");
    assert!(tg["text"].as_str().unwrap().contains("jellyfin"), "{tg}");

    healthy_service(port);
    wait_until("one resolved message each", Duration::from_secs(30), || {
        all(2)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(json_bodies(&seen, Some("/slack")).len(), 2);
    assert_eq!(json_bodies(&seen, Some("/discord")).len(), 2);
    assert_eq!(json_bodies(&seen, Some(telegram)).len(), 2);

    // The token is a secret: not in any stored event.
    let out = run(labmesh(&data).args(["events", "list", "--jsonl"]));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SECRET-token"));
}

/// The README's promise: an ntfy or a Telegram receiver in three lines, no `[[route]]`, and a
/// stopped service brings one firing and one resolved message. The only line added to each is
/// `server`, pointing the default (https://ntfy.sh, https://api.telegram.org, whose URLs the
/// notify unit tests check) at the local stand-in.
#[test]
fn three_line_ntfy_and_telegram_receivers_hear_a_stopped_service_fire_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (recv, seen) = recording_server();
    let port = free_port();
    let config = format!(
        "[[check]]\nname = \"jellyfin\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\n\n\
         [alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\n\
         [[receiver]]\nkind = \"ntfy\"\ntopic = \"homelab-alerts-7f3k2\"\n\
         server = \"http://{recv}\"\n\n\
         [[receiver]]\nkind = \"telegram\"\ntoken_env = \"TELEGRAM_TOKEN\"\nchat_id = 123456789\n\
         server = \"http://{recv}\"\n"
    );
    assert!(!config.contains("[[route]]"));
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let _agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path)
            .env("TELEGRAM_TOKEN", "987:bot-token");
    });
    let ntfy = || -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "/homelab-alerts-7f3k2")
            .map(|(_, b)| b.clone())
            .collect()
    };
    let telegram = || json_bodies(&seen, Some("/bot987:bot-token/sendMessage"));
    wait_until("the firing messages", Duration::from_secs(60), || {
        !ntfy().is_empty() && !telegram().is_empty()
    });
    assert!(ntfy()[0].contains("jellyfin"), "{:?}", ntfy());
    let tg = &telegram()[0];
    assert_eq!(tg["chat_id"].to_string().trim_matches('"'), "123456789");
    assert!(tg["text"].as_str().unwrap().contains("FIRING"), "{tg}");

    healthy_service(port);
    wait_until("the resolved messages", Duration::from_secs(60), || {
        ntfy().len() >= 2 && telegram().len() >= 2
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ntfy().len(), 2, "{:?}", ntfy());
    assert_eq!(telegram().len(), 2);
    assert!(
        telegram()[1]["text"].as_str().unwrap().contains("RESOLVED"),
        "{}",
        telegram()[1]
    );
}
