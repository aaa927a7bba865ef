//! Creating the target table, or checking an existing one against the schema: every
//! mismatch is listed at start, and the columns of new nullable fields are added.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use sqlx::{MySqlPool, Row as _};

use super::errors::sink_error;
use super::layout::{Column, Layout};
use super::sql::ident;
use super::types::{accepted_types, column_type_problem, type_name};
use crate::stages::sinks::SinkError;

impl Layout {
    /// `CREATE TABLE IF NOT EXISTS` for the layout, field docs as column comments.
    pub fn create_table_sql(&self) -> String {
        let mut s = format!("CREATE TABLE IF NOT EXISTS {} (\n", ident(&self.table));
        for c in &self.columns {
            let _ = write!(s, "  {} {}", ident(&c.name), c.create_type);
            if let Some(d) = &c.doc {
                let _ = write!(s, " COMMENT {}", comment_literal(d));
            }
            s.push_str(",\n");
        }
        let _ = write!(
            s,
            "  PRIMARY KEY ({})\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            ident(&self.key().name)
        );
        s
    }
}

/// A comment literal; the session runs without NO_BACKSLASH_ESCAPES (its sql_mode is ours).
fn comment_literal(s: &str) -> String {
    let s: String = s.chars().take(1000).collect();
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A column as `information_schema` describes it.
#[derive(Debug, Clone)]
struct ExistingColumn {
    data_type: String,
    column_type: String,
    nullable: bool,
    has_default: bool,
    generated: bool,
}

/// The table's columns and primary key as `information_schema` has them (`None`: no table).
async fn existing_columns(
    pool: &MySqlPool,
    table: &str,
) -> Result<Option<(BTreeMap<String, ExistingColumn>, Vec<String>)>, SinkError> {
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
         CAST(IS_NULLABLE AS CHAR), COLUMN_DEFAULT IS NOT NULL, CAST(EXTRA AS CHAR) \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| sink_error("reading the table's columns", &e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut cols = BTreeMap::new();
    for r in rows {
        let name: String = r
            .try_get(0)
            .map_err(|e| sink_error("reading columns", &e))?;
        let extra: String = r.try_get(5).unwrap_or_default();
        let nullable: String = r.try_get(3).unwrap_or_default();
        let has_default: bool = r.try_get::<i64, _>(4).map(|v| v != 0).unwrap_or(false);
        cols.insert(
            name,
            ExistingColumn {
                data_type: r
                    .try_get::<String, _>(1)
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                column_type: r.try_get::<String, _>(2).unwrap_or_default(),
                nullable: nullable.eq_ignore_ascii_case("YES"),
                has_default,
                generated: extra.to_ascii_lowercase().contains("auto_increment")
                    || extra.to_ascii_lowercase().contains("generated"),
            },
        );
    }
    let pk: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| sink_error("reading the table's primary key", &e))?;
    Ok(Some((cols, pk)))
}

/// What to do with an existing table: the columns to add, or every mismatch found.
fn plan_existing(
    layout: &Layout,
    cols: &BTreeMap<String, ExistingColumn>,
    pk: &[String],
) -> Result<Vec<Column>, Vec<String>> {
    let mut problems = Vec::new();
    let mut add = Vec::new();
    for c in &layout.columns {
        match cols.get(&c.name) {
            None if c.nullable && c.source.is_field() => add.push(c.clone()),
            None => problems.push(format!(
                "column `{}` is missing{}",
                c.name,
                if c.source.is_field() {
                    " and the field is not nullable, so it cannot be added to existing rows"
                } else {
                    " (a lineage column)"
                }
            )),
            Some(e) => {
                let ok = accepted_types(&c.ty);
                if !ok.contains(&e.data_type.as_str()) {
                    problems.push(format!(
                        "column `{}` is {} but field `{}` ({}) needs one of {}",
                        c.name,
                        e.column_type,
                        c.name,
                        type_name(&c.ty),
                        ok.join(", ").to_ascii_uppercase()
                    ));
                } else if let Some(p) = column_type_problem(&c.ty, &e.column_type) {
                    problems.push(format!(
                        "column `{}` is {}, which {p}",
                        c.name, e.column_type
                    ));
                }
                if c.nullable && !e.nullable {
                    problems.push(format!(
                        "column `{}` is NOT NULL but the field is nullable",
                        c.name
                    ));
                }
            }
        }
    }
    for (name, e) in cols {
        let known = layout.columns.iter().any(|c| &c.name == name);
        if !known && !e.nullable && !e.has_default && !e.generated {
            problems.push(format!(
                "column `{name}` is not in the schema and is NOT NULL without a default, so no row could be inserted"
            ));
        }
    }
    if pk != [layout.key().name.clone()] {
        problems.push(format!(
            "the primary key is ({}) but must be ({})",
            pk.join(", "),
            layout.key().name
        ));
    }
    if problems.is_empty() {
        Ok(add)
    } else {
        Err(problems)
    }
}

/// Creates the table, or checks it and adds the columns of new nullable fields.
pub async fn ensure_table(pool: &MySqlPool, layout: &Layout) -> Result<(), SinkError> {
    match existing_columns(pool, &layout.table).await? {
        None => {
            sqlx::Executor::execute(pool, layout.create_table_sql().as_str())
                .await
                .map_err(|e| sink_error("creating the table", &e))?;
            tracing::info!(table = %layout.table, columns = layout.columns.len(), "created table");
        }
        Some((cols, pk)) => match plan_existing(layout, &cols, &pk) {
            Ok(add) if add.is_empty() => {}
            Ok(add) => {
                let parts: Vec<String> = add
                    .iter()
                    .map(|c| format!("ADD COLUMN {} {}", ident(&c.name), c.create_type))
                    .collect();
                let sql = format!("ALTER TABLE {} {}", ident(&layout.table), parts.join(", "));
                sqlx::Executor::execute(pool, sql.as_str())
                .await
                .map_err(|e| sink_error("adding columns", &e))?;
                let names: Vec<&str> = add.iter().map(|c| c.name.as_str()).collect();
                tracing::info!(table = %layout.table, added = ?names, "added columns for new nullable schema fields");
            }
            Err(problems) => {
                return Err(SinkError::Schema(format!(
                    "table `{}` does not match the schema: {}. Alter or drop the table, or point sink.mysql.table at another one",
                    layout.table,
                    problems.join("; ")
                )))
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::server::Flavor;
    use super::super::tests::schema;
    use super::*;
    use crate::record::FieldType;

    #[test]
    fn create_table_maps_types_and_key() {
        let l = Layout::new(&schema(), "t", Some("summoner_id"), 100, Flavor::MariaDb).unwrap();
        let sql = l.create_table_sql();
        assert!(sql.contains("`summoner_id` VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL"), "{sql}");
        assert!(sql.contains("`wins` INT NOT NULL"), "{sql}");
        assert!(sql.contains("`win_rate` DOUBLE NULL"), "{sql}");
        assert!(sql.contains("`fetched_at` DATETIME(3) NOT NULL"), "{sql}");
        assert!(sql.contains("PRIMARY KEY (`summoner_id`)"), "{sql}");
        assert!(sql.contains("`_loaded_at` DATETIME(3) NOT NULL"), "{sql}");
        assert!(Layout::new(&schema(), "t", Some("win_rate"), 100, Flavor::MariaDb).is_err());
        assert!(Layout::new(&schema(), "t", Some("nope"), 100, Flavor::MariaDb).is_err());
    }

    fn nested() -> crate::record::RecordSchema {
        crate::codec::load_schema(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/nested_entry.avsc"
        ))
        .unwrap()
    }

    #[test]
    fn nested_and_logical_types_get_their_columns() {
        let l = Layout::new(&nested(), "t", Some("id"), 255, Flavor::MariaDb).unwrap();
        let sql = l.create_table_sql();
        for want in [
            "`id` CHAR(36) CHARACTER SET ascii NOT NULL",
            "`region` VARCHAR(255) CHARACTER SET ascii NOT NULL",
            "`score` DECIMAL(10,2) NOT NULL",
            "`prize` DECIMAL(18,4) NOT NULL",
            "`hash` BINARY(16) NOT NULL",
            "`raw` LONGBLOB NOT NULL",
            "`tags` JSON NOT NULL",
            "`counts` JSON NOT NULL",
            "`mini_series` JSON NULL",
            "`players` JSON NOT NULL",
            "`choice` JSON NULL",
            "`samples` JSON NOT NULL",
            "`day` DATE NOT NULL",
            "`at_ms` TIME(3) NOT NULL",
            "`at_us` TIME(6) NOT NULL",
            "`ts_ms` DATETIME(3) NOT NULL",
            "`ts_us` DATETIME(6) NOT NULL",
            "`local_ms` DATETIME(3) NOT NULL",
            "`local_us` DATETIME(6) NOT NULL",
            "`flag` BOOLEAN NULL",
            "`ratio` FLOAT NOT NULL",
            "PRIMARY KEY (`id`)",
        ] {
            assert!(sql.contains(want), "{want} in {sql}");
        }
    }

    #[test]
    fn a_flattened_record_is_one_column_per_field() {
        let flatten = vec!["mini_series".to_string()];
        let l = Layout::with_flatten(&nested(), "t", None, 255, Flavor::MariaDb, &flatten).unwrap();
        let sql = l.create_table_sql();
        // The record is nullable, so every column of it is.
        assert!(
            sql.contains("`mini_series_progress` LONGTEXT NULL"),
            "{sql}"
        );
        assert!(sql.contains("`mini_series_wins` INT NULL"), "{sql}");
        assert!(!sql.contains("`mini_series` "), "{sql}");
        let c = l
            .columns
            .iter()
            .find(|c| c.name == "mini_series_losses")
            .unwrap();
        assert_eq!(
            c.source,
            super::super::layout::Source::Path(vec!["mini_series".into(), "losses".into()])
        );
        let bad = |f: &str| {
            Layout::with_flatten(&nested(), "t", None, 255, Flavor::MariaDb, &[f.to_string()])
                .unwrap_err()
                .to_string()
        };
        let e = bad("tags");
        assert!(
            e.contains("sink.mysql.flatten") && e.contains("only records"),
            "{e}"
        );
        assert!(bad("nope").contains("not a field"));
        assert!(bad("mini_series.progress").contains("must be flattened too"));
    }

    #[test]
    fn flattened_names_that_collide_are_refused() {
        let mut s = nested();
        s.fields.push(crate::record::FieldSchema {
            name: "mini_series_wins".into(),
            ty: FieldType::Int,
            nullable: false,
            doc: None,
            default: None,
            aliases: Vec::new(),
        });
        let flatten = vec!["mini_series".to_string()];
        let e = Layout::with_flatten(&s, "t", None, 255, Flavor::MariaDb, &flatten)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`mini_series_wins`") && e.contains("sink.mysql.flatten"),
            "{e}"
        );
    }

    #[test]
    fn a_decimal_mysql_cannot_hold_fails_naming_the_field() {
        let mut s = schema();
        s.fields.push(crate::record::FieldSchema {
            name: "huge".into(),
            ty: FieldType::Decimal {
                precision: 70,
                scale: 2,
                fixed: None,
            },
            nullable: false,
            doc: None,
            default: None,
            aliases: Vec::new(),
        });
        let e = Layout::new(&s, "t", None, 255, Flavor::MariaDb)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`huge`") && e.contains("decimal(70,2)"), "{e}");
    }

    #[test]
    fn existing_table_mismatch_is_explained() {
        let l = Layout::new(&schema(), "t", None, 255, Flavor::MariaDb).unwrap();
        let mut cols = BTreeMap::new();
        for c in &l.columns {
            cols.insert(
                c.name.clone(),
                ExistingColumn {
                    data_type: accepted_types(&c.ty)[0].into(),
                    column_type: accepted_types(&c.ty)[0].into(),
                    nullable: c.nullable,
                    has_default: false,
                    generated: false,
                },
            );
        }
        let pk = vec!["_key".to_string()];
        assert!(plan_existing(&l, &cols, &pk).unwrap().is_empty());
        cols.remove("win_rate");
        let add = plan_existing(&l, &cols, &pk).unwrap();
        assert_eq!(add[0].name, "win_rate");
        let l2 = Layout::new(&nested(), "t", None, 255, Flavor::MariaDb).unwrap();
        let mut cols2 = BTreeMap::new();
        for c in &l2.columns {
            let t = c
                .create_type
                .split(' ')
                .next()
                .unwrap()
                .to_ascii_lowercase();
            cols2.insert(
                c.name.clone(),
                ExistingColumn {
                    data_type: t
                        .split('(')
                        .next()
                        .unwrap()
                        .replace("json", "longtext")
                        .replace("boolean", "tinyint"),
                    column_type: t,
                    nullable: c.nullable,
                    has_default: false,
                    generated: false,
                },
            );
        }
        assert!(plan_existing(&l2, &cols2, &pk).unwrap().is_empty());
        cols2.get_mut("ts_us").unwrap().column_type = "datetime(3)".into();
        cols2.get_mut("score").unwrap().column_type = "decimal(8,2)".into();
        cols2.get_mut("tags").unwrap().data_type = "int".into();
        let err = plan_existing(&l2, &cols2, &pk).unwrap_err().join("; ");
        assert!(
            err.contains(
                "column `ts_us` is datetime(3), which keeps 3 fractional digits, 6 are needed"
            ),
            "{err}"
        );
        assert!(
            err.contains("column `score` is decimal(8,2), which cannot hold every decimal(10,2)"),
            "{err}"
        );
        assert!(
            err.contains("field `tags` (array) needs one of JSON, LONGTEXT"),
            "{err}"
        );
        cols.get_mut("wins").unwrap().data_type = "varchar".into();
        cols.get_mut("wins").unwrap().column_type = "varchar(10)".into();
        let err = plan_existing(&l, &cols, &pk).unwrap_err().join("; ");
        assert!(err.contains("column `wins` is varchar(10)"), "{err}");
    }
}
