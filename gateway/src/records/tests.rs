use serde_json::json;

use super::*;
use crate::store::scratch;

/// A fresh records store with one connection on each database the tests run against.
async fn stores() -> Vec<(Records, scratch::Scratch, i64)> {
    let mut out = Vec::new();
    for (db, scratch) in scratch::databases().await {
        let id = scratch::connection(&db, "gh", "c1").await;
        out.push((Records::new(db), scratch, id));
    }
    out
}

/// The page's records as values, to look into.
fn parsed(page: &Page) -> Vec<Value> {
    page.records.iter().map(|r| serde_json::from_str(r.get()).unwrap()).collect()
}

fn ids(page: &Page) -> Vec<(String, String)> {
    parsed(page)
        .iter()
        .map(|r| {
            (r["id"].as_str().unwrap().to_string(), r["_nango_metadata"]["last_action"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test]
async fn unchanged_records_keep_their_place_and_changes_move_to_the_end() {
    for (records, _scratch, conn) in stores().await {
        let ds = Dataset::new(conn, "Issue", None);
        let first = records
            .save(
                &ds,
                vec![json!({"id": 1, "t": "a"}), json!({"id": "2", "t": "b"}), json!({"id": 1, "t": "dup"})],
                1,
                10,
            )
            .await
            .unwrap();
        assert_eq!((first.added, first.updated), (2, 0));
        let all = records.list(&ds, &ListQuery { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(ids(&all), vec![("1".into(), "ADDED".into()), ("2".into(), "ADDED".into())]);
        let all_records = parsed(&all);
        assert_eq!(all_records[0]["t"], "a", "the first of repeated ids wins");
        let cursor = decode_cursor(all_records[1]["_nango_metadata"]["cursor"].as_str().unwrap()).unwrap();

        let second =
            records.save(&ds, vec![json!({"id": 1, "t": "a"}), json!({"id": "2", "t": "c"})], 2, 20).await.unwrap();
        assert_eq!((second.added, second.updated, second.unchanged), (0, 1, 1));
        let after =
            records.list(&ds, &ListQuery { after_seq: Some(cursor), limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(ids(&after), vec![("2".into(), "UPDATED".into())]);

        let merged =
            records.update(&ds, vec![json!({"id": "2", "extra": {"x": 1}}), json!({"id": "9"})], 2, 30).await.unwrap();
        assert_eq!(merged.updated, 1);
        let deleted = records.delete(&ds, vec![json!({"id": 1})], 40).await.unwrap();
        assert_eq!(deleted.deleted, 1);
        let page = records.list(&ds, &ListQuery { limit: 1, ..Default::default() }).await.unwrap();
        assert_eq!(page.records.len(), 1);
        assert!(page.next_cursor.is_some());
        let only_deleted = records
            .list(&ds, &ListQuery { actions: vec![Action::Deleted], limit: 100, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(ids(&only_deleted), vec![("1".into(), "DELETED".into())]);
        let two =
            records.list(&ds, &ListQuery { ids: vec!["2".into()], limit: 100, ..Default::default() }).await.unwrap();
        let two_records = parsed(&two);
        assert_eq!(two_records[0]["extra"], json!({"x": 1}));
        assert_eq!(two_records[0]["t"], "c");
        assert_eq!(records.count(&ds).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn a_full_sync_deletes_what_it_did_not_see() {
    for (records, _scratch, conn) in stores().await {
        let ds = Dataset::new(conn, "Item", Some("eu"));
        assert_eq!(ds.model, "Item::eu");
        records.save(&ds, vec![json!({"id": "a"}), json!({"id": "b"}), json!({"id": "c"})], 1, 10).await.unwrap();
        records.save(&ds, vec![json!({"id": "a"}), json!({"id": "c"})], 2, 20).await.unwrap();
        assert_eq!(records.delete_unseen(&ds, 2, 30).await.unwrap(), 1);
        let deleted = records
            .list(&ds, &ListQuery { actions: vec![Action::Deleted], limit: 100, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(ids(&deleted), vec![("b".into(), "DELETED".into())]);
        // Saving it again brings it back as added.
        let back = records.save(&ds, vec![json!({"id": "b"})], 3, 40).await.unwrap();
        assert_eq!(back.added, 1);
    }
}

#[tokio::test]
async fn records_stored_before_the_primary_key_change_keep_their_place_and_their_cascade() {
    for (db, _scratch) in scratch::empty_databases().await {
        // Migration 9 replaced the surrogate key and the foreign key; records written before it
        // must come through whole, and deleting their connection must still remove them.
        db.migrate_to(8).await.unwrap();
        let conn = scratch::connection(&db, "gh", "c1").await;
        let live = r#"{"id":"a","t":1}"#;
        crate::with_pool!(&db, pool => {
            sqlx::query("INSERT INTO record_datasets (connection, model, last_seq, last_modified_at) VALUES ($1, 'Issue', 2, 20)")
                .bind(conn)
                .execute(pool)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO records (connection, model, external_id, data, data_hash, seq, first_seen_at,
                     last_modified_at, deleted_at, last_action, seen_run)
                 VALUES ($1, 'Issue', 'a', $2, $3, 1, 10, 10, NULL, 'ADDED', 1),
                        ($1, 'Issue', 'b', '{\"id\":\"b\"}', 'x', 2, 10, 20, 20, 'DELETED', 1)",
            )
            .bind(conn)
            .bind(live)
            .bind(content_hash(live))
            .execute(pool)
            .await
            .unwrap();
        });
        db.migrate().await.unwrap();

        let records = Records::new(db.clone());
        let ds = Dataset::new(conn, "Issue", None);
        let page = records.list(&ds, &ListQuery { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(ids(&page), vec![("a".into(), "ADDED".into()), ("b".into(), "DELETED".into())]);
        assert_eq!(parsed(&page)[0]["t"], 1);
        let again = records.save(&ds, vec![json!({"id": "a", "t": 1}), json!({"id": "c"})], 2, 30).await.unwrap();
        assert_eq!((again.unchanged, again.added), (1, 1));
        let after = records.list(&ds, &ListQuery { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(ids(&after).last(), Some(&("c".into(), "ADDED".into())));

        let other = Dataset::new(conn, "Issue", Some("eu"));
        records.save(&other, vec![json!({"id": "a"})], 2, 30).await.unwrap();
        crate::with_pool!(&db, pool => {
            sqlx::query("DELETE FROM connections WHERE id = $1").bind(conn).execute(pool).await.unwrap();
        });
        let left: i64 = crate::with_pool!(&db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM records").fetch_one(pool).await.unwrap());
        assert_eq!(left, 0);
    }
}

#[tokio::test]
async fn invalid_records_are_refused_with_their_position() {
    for (records, _scratch, conn) in stores().await {
        let ds = Dataset::new(conn, "Issue", None);
        let e = records.save(&ds, vec![json!({"id": "ok"}), json!({"title": "no id"})], 1, 10).await.unwrap_err();
        assert!(e.to_string().contains("record 1"), "{e}");
        assert!(decode_cursor("garbage").is_err());
    }
}

#[tokio::test]
async fn times_never_go_back_so_modified_after_and_filters_page_in_change_order() {
    for (records, _scratch, conn) in stores().await {
        let ds = Dataset::new(conn, "Issue", None);
        records.save(&ds, vec![json!({"id": "a"}), json!({"id": "b"}), json!({"id": "c"})], 1, 100).await.unwrap();
        // A writer whose clock is behind the dataset's last write stamps the last write's time.
        records.save(&ds, vec![json!({"id": "a", "v": 2}), json!({"id": "d"})], 2, 50).await.unwrap();
        records.delete(&ds, vec![json!({"id": "b"})], 200).await.unwrap();
        let all = records.list(&ds, &ListQuery { limit: 100, ..Default::default() }).await.unwrap();
        let all_records = parsed(&all);
        let times: Vec<&str> =
            all_records.iter().map(|r| r["_nango_metadata"]["last_modified_at"].as_str().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

        let since = |t: i64, actions: Vec<Action>| ListQuery {
            modified_after: Some(t),
            actions,
            limit: 100,
            ..Default::default()
        };
        let at_100 = records.list(&ds, &since(100, vec![])).await.unwrap();
        assert_eq!(
            ids(&at_100),
            vec![
                ("c".into(), "ADDED".into()),
                ("a".into(), "UPDATED".into()),
                ("d".into(), "ADDED".into()),
                ("b".into(), "DELETED".into())
            ]
        );
        assert_eq!(ids(&records.list(&ds, &since(101, vec![])).await.unwrap()), vec![("b".into(), "DELETED".into())]);
        assert!(records.list(&ds, &since(201, vec![])).await.unwrap().records.is_empty());

        let two = records.list(&ds, &since(0, vec![Action::Updated, Action::Deleted])).await.unwrap();
        assert_eq!(ids(&two), vec![("a".into(), "UPDATED".into()), ("b".into(), "DELETED".into())]);
        let paged = records
            .list(&ds, &ListQuery { actions: vec![Action::Added, Action::Updated], limit: 2, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(ids(&paged), vec![("c".into(), "ADDED".into()), ("a".into(), "UPDATED".into())]);
        let rest = records
            .list(
                &ds,
                &ListQuery {
                    after_seq: Some(decode_cursor(paged.next_cursor.as_deref().unwrap()).unwrap()),
                    actions: vec![Action::Added, Action::Updated, Action::Added],
                    limit: 2,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&rest), vec![("d".into(), "ADDED".into())]);
        assert!(rest.next_cursor.is_none());
        let every = records
            .list(
                &ds,
                &ListQuery {
                    actions: vec![Action::Added, Action::Updated, Action::Deleted],
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(every.records.len(), 4);
    }
}

fn stored_row(data: &str) -> StoredRow {
    StoredRow {
        external_id: "7".into(),
        data: data.into(),
        seq: 5,
        first_seen_at: 0,
        last_modified_at: 1_000,
        deleted_at: Some(2_000),
        pruned_at: None,
        last_action: "DELETED".into(),
    }
}

#[test]
fn a_record_keeps_its_fields_in_order_with_its_id_as_text_and_the_metadata_last() {
    let row = stored_row(r#"{"a\"b":"x\\y","id":7,"n":{"deep":[1,2.5,null]},"_nango_metadata":{"old":true},"z":"é"}"#);
    let text = row.to_api().unwrap();
    let record: Value = serde_json::from_str(text.get()).unwrap();
    let keys: Vec<&str> = record.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["a\"b", "id", "n", "z", "_nango_metadata"]);
    assert_eq!(record["a\"b"], "x\\y");
    assert_eq!(record["id"], "7");
    assert_eq!(record["n"], json!({"deep": [1, 2.5, null]}));
    assert_eq!(record["z"], "é");
    assert_eq!(
        record["_nango_metadata"],
        json!({
            "first_seen_at": "1970-01-01T00:00:00.000Z",
            "last_modified_at": "1970-01-01T00:00:01.000Z",
            "last_action": "DELETED",
            "deleted_at": "1970-01-01T00:00:02.000Z",
            "pruned_at": null,
            "cursor": encode_cursor(5),
        })
    );
}

#[test]
fn a_record_that_is_not_an_object_comes_back_as_its_id() {
    for data in ["not json", "[1,2]", ""] {
        let record: Value = serde_json::from_str(stored_row(data).to_api().unwrap().get()).unwrap();
        assert_eq!(record["id"], "7", "{data}");
        assert_eq!(record.as_object().unwrap().len(), 2, "{data}");
    }
}
