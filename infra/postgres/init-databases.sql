-- A database per service (the compose stack's PostgreSQL runs this once, on first start).
CREATE DATABASE orders;
CREATE DATABASE inventory;
CREATE DATABASE payments;
CREATE DATABASE shipping;
CREATE DATABASE notifications;
CREATE DATABASE query;
CREATE DATABASE provider;
CREATE DATABASE carrier;
CREATE DATABASE registry;  -- the schema registry's (Apicurio's SQL storage)
