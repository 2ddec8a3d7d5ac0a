from services.orders.app import main

main()
